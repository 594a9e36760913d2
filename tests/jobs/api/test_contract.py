"""The API keeps the contract its OpenAPI document states: schemathesis generates requests from /openapi.json for
every operation and checks each answer (no 5xx, declared statuses, schema-valid bodies and headers, schema-valid
requests accepted, invalid ones refused, auth enforced, Allow on 405) against a live server on Milvus Lite (the
store's contract holds on both stores: tests/indexer). A bounded number of examples per operation keeps it to
seconds, and a fixed seed makes every run of the suite draw the same requests: a failure is the code's, never the
draw's.

The long run draws afresh each time, with more examples (`make contract`, or by hand):
ARCMATCH_CONTRACT_SEED=random ARCMATCH_CONTRACT_EXAMPLES=200 pytest tests/jobs/api/test_contract.py
"""

import os
import re
from dataclasses import dataclass

import httpx
import pytest

from jobs.api.app import create_app
from jobs.settings import Settings
from tests.helpers import WRITE_ENTRY, WRITE_KEY, live_app, png

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is in the test extra: pip install -e .[test]")
from hypothesis import HealthCheck, given, seed, settings  # noqa: E402  (after the skip: hypothesis comes with it)
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.core.failures import FailureGroup  # noqa: E402

EXAMPLES = int(os.environ.get("ARCMATCH_CONTRACT_EXAMPLES", "20"))
SEED = os.environ.get("ARCMATCH_CONTRACT_SEED", "20261204")  # "random": a fresh draw (the long run)


@dataclass(frozen=True)
class Inexpressible:
    """A refusal of a schema-valid request that the OpenAPI document cannot state: which operations, which
    status, which of the server's reasons (its `detail`), and why JSON Schema cannot say it. Nothing broader."""

    operations: str  # a regex over schemathesis' labels, "POST /v1/search"
    status: int
    detail: str  # a regex over the answer's detail
    why: str

    def excuses(self, label: str, status: int, detail: str) -> bool:
        return status == self.status and re.search(self.operations, label) is not None \
            and re.search(self.detail, detail) is not None


UPLOADS = r"^POST (/v1/search|/v1/identities/\{identity\}/faces)$"
INEXPRESSIBLE = (
    Inexpressible(UPLOADS, 415, r"^(images: )?unsupported image format", "a photo's bytes: OpenAPI has no type for "
                  "'an image in one of these formats', so any binary string is schema-valid"),
    Inexpressible(UPLOADS, 400, r"^(images: |image \d+: |[^:]*: )?(corrupt image data|not a readable image|"
                  r"image is \d+x\d+|no face|empty image)", "a photo's content: whether it decodes, to what size "
                  "and what it shows is known only once decoded"),
    Inexpressible(r"^POST /v1/identities/\{identity\}/faces$", 400, r"^metadata ", "a JSON object inside a form "
                  "field: JSON Schema's contentMediaType is an annotation, not a check"),
    Inexpressible(r"\{identity\}|^POST /v1/clusters/\{cluster\}/promote$", 400,
                  r"^identity is \d+ bytes in UTF-8, over the limit of 256$", "an identity holds at most 256 UTF-8 "
                  "bytes; JSON Schema's maxLength counts characters (256 are documented, and as many bytes)"),
    Inexpressible(r"^POST /v1/calibration$", 400, r"^(an FPIR of \S+ needs at least \d+ unknown-person trials; "
                  r"this gallery gave|calibration needs faces of at least two identities|a tail model needs at "
                  r"least \d+ identities|no threshold keeps FPIR at)", "a calibration needs enough people in the "
                  "gallery, told apart by its model: the gallery's state, not the request's shape"),
    Inexpressible(r"^POST /v1/identities/\{identity\}/(merge|faces/\{face\}/move)$", 400,
                  r"^(merging an identity into itself|face \d+ is already )", "the body's identity must differ from "
                  "the path's: JSON Schema cannot compare a body field with a path parameter"),
    Inexpressible(r"^POST /v1/search(/embedding)?$", 400, r"^(an FPIR needs the gallery's calibration|the "
                  r"gallery's calibration can answer an FPIR between|the gallery's calibration keeps no FPIR curve|"
                  r"give a threshold or an FPIR, not both)", "a rate is read from the gallery's calibration (its "
                  "state: whether there is one, and the rates it measured); threshold and fpir exclude each other "
                  "across form fields"),
)
# the API on Milvus Lite: the store holds its contract on both stores (tests/indexer), "server" runs it there
@pytest.fixture(scope="module", params=["lite"])
def contract_api(request, tmp_path_factory, tiny_model_dir):
    tmp = tmp_path_factory.mktemp("contract")
    uri = str(tmp / "contract.db") if request.param == "lite" else request.getfixturevalue("milvus_server_uri")
    app_settings = Settings(model=tiny_model_dir, api_keys=WRITE_ENTRY, milvus_uri=uri,
                            gallery=f"contract_{request.param}_{os.getpid()}", max_upload_bytes=200_000,
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
        })
        yield schemathesis.openapi.from_url(f"{base}/openapi.json", config=config)


def test_every_operation_keeps_the_contract(contract_api):
    failures, excused, operations = {}, set(), 0
    for result in contract_api.get_all_operations():
        operation = result.ok()
        operations += 1
        cases = operation.as_strategy(GenerationMode.POSITIVE) | operation.as_strategy(GenerationMode.NEGATIVE)

        @given(case=cases)
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case) -> None:
            response = case.call(timeout=60)
            try:
                case.validate_response(response)
            except FailureGroup as group:  # collect every operation's failures, then report them all at once
                label, detail = case.operation.label, _detail(response)
                for failure in group.exceptions:
                    reason = next((i for i in INEXPRESSIBLE if failure.title == "Schema-valid request rejected"
                                   and i.excuses(label, response.status_code, detail)), None)
                    if reason is not None:
                        excused.add(reason.why)
                    else:  # one example of each kind of failure: (operation, check, status)
                        failures.setdefault((label, failure.title, response.status_code),
                                            f"{detail[:200]} | {(failure.message or '')[:300]}")

        (check if SEED == "random" else seed(int(SEED))(check))()
    assert operations >= 8
    assert not failures, f"{len(failures)} kinds of contract failure:\n" + "\n".join(
        f"{label}: {title}: {status}: {example}" for (label, title, status), example in sorted(failures.items()))


def _detail(response) -> str:
    try:
        return str(response.json().get("detail", ""))
    except ValueError:
        return ""
