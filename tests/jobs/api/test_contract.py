"""The API keeps the contract its OpenAPI document states: schemathesis generates requests from /openapi.json for
every operation and checks each answer (no 5xx, declared statuses, schema-valid bodies and headers, schema-valid
requests accepted, invalid ones refused, auth enforced, Allow on 405) against a live server on Milvus Lite and on
the Milvus server. A bounded number of examples per operation keeps it to seconds.

Run by hand with more examples: ARCMATCH_CONTRACT_EXAMPLES=200 pytest tests/jobs/api/test_contract.py
"""

import os

import httpx
import pytest

from jobs.api.app import create_app
from jobs.settings import Settings
from tests.helpers import WRITE_ENTRY, WRITE_KEY, live_app, png

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is in the test extra: pip install -e .[test]")
from hypothesis import HealthCheck, given, settings  # noqa: E402  (after the skip: hypothesis comes with it)
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.core.failures import FailureGroup  # noqa: E402

EXAMPLES = int(os.environ.get("ARCMATCH_CONTRACT_EXAMPLES", "20"))
# A photo's bytes cannot be described in OpenAPI (any binary string is "valid"), so the two upload routes may
# refuse schema-valid bodies with 400 (no face, undecodable) or 415 (not an image format): said here, once.
UPLOADS_MAY_REFUSE = {"include-path-regex": "^/v1/search$|/faces$", "include-method": "POST",
                      "checks": {"positive_data_acceptance": {"expected-statuses": [
                          "2xx", "400", "401", "403", "404", "409", "413", "415", "503"]}}}


@pytest.fixture(scope="module", params=["lite", "server"])
def contract_api(request, tmp_path_factory, tiny_model_dir):
    tmp = tmp_path_factory.mktemp("contract")
    uri = str(tmp / "contract.db") if request.param == "lite" else request.getfixturevalue("milvus_server_uri")
    app_settings = Settings(model=tiny_model_dir, api_keys=WRITE_ENTRY, milvus_uri=uri,
                            collection=f"contract_{request.param}_{os.getpid()}", max_upload_bytes=200_000,
                            max_pixels=1_000_000, audit_dir=tmp / "audit")
    with live_app(create_app(app_settings)) as base:
        with httpx.Client(base_url=base, timeout=60, headers={"X-API-Key": WRITE_KEY}) as client:
            for name, seed in (("ann", 1), ("bob", 2)):  # faces for the reads to find
                assert client.post(f"/v1/identities/{name}/faces", files=[("images", ("a.png", png(seed)))]
                                   ).status_code == 201
        config = schemathesis.Config.from_dict({
            "auth": {"openapi": {"APIKeyHeader": {"api_key": WRITE_KEY}}},
            "generation": {"max-examples": EXAMPLES},
            "checks": {"enabled": True},
            "operations": [UPLOADS_MAY_REFUSE],
        })
        yield schemathesis.openapi.from_url(f"{base}/openapi.json", config=config)


def test_every_operation_keeps_the_contract(contract_api):
    failures, operations = [], 0
    for result in contract_api.get_all_operations():
        operation = result.ok()
        operations += 1
        cases = operation.as_strategy(GenerationMode.POSITIVE) | operation.as_strategy(GenerationMode.NEGATIVE)

        @given(case=cases)
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case) -> None:
            try:
                case.call_and_validate(timeout=60)
            except FailureGroup as group:  # collect every operation's failures, then report them all at once
                label = case.operation.label
                failures.extend(f"{label}: {f.title}: {(f.message or '')[:300]}" for f in group.exceptions)

        check()
    assert operations >= 8
    assert not failures, f"{len(failures)} contract failures:\n" + "\n".join(sorted(set(failures))[:40])
