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
from jobs.api.gallery_schemas import NAME_RULES
from jobs.api.keys import new_key
from jobs.settings import Settings
from tests.helpers import live_app, png

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is in the test extra: pip install -e .[test]")
from hypothesis import HealthCheck, given, seed, settings  # noqa: E402  (after the skip: hypothesis comes with it)
from hypothesis import strategies as st  # noqa: E402
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


GALLERY = r"(/galleries/\{gallery\})?"  # every face route is also under /v1/galleries/{gallery}
UPLOADS = rf"^POST /v1{GALLERY}(/search|/identities/\{{identity\}}/faces)$"
REFUSED = r"(\d+ of \d+ photos refused, nothing enrolled: )?"  # an enrollment names each photo it refused
INEXPRESSIBLE = (
    Inexpressible(UPLOADS, 415, rf"^{REFUSED}(images: )?unsupported image format", "a photo's bytes: OpenAPI has no "
                  "type for 'an image in one of these formats', so any binary string is schema-valid"),
    Inexpressible(UPLOADS, 400, rf"^{REFUSED}(images: |image \d+: |[^:]*: )?(corrupt image data|not a readable "
                  r"image|image is \d+x\d+|no face|empty image|unsupported image format)", "a photo's content: "
                  "whether it decodes, to what size and what it shows is known only once decoded (several photos "
                  "refused for different reasons are a 400)"),
    Inexpressible(rf"^POST /v1{GALLERY}/identities/\{{identity\}}/faces$", 400, r"^metadata ", "a JSON object "
                  "inside a form field: JSON Schema's contentMediaType is an annotation, not a check"),
    Inexpressible(rf"\{{identity\}}|^POST /v1{GALLERY}/clusters/\{{cluster\}}/promote$|^GET /v1{GALLERY}/identities$"
                  rf"|^POST /v1{GALLERY}/gallery/distinct$",
                  400, r"^cursor is \d+ bytes in UTF-8, over the limit of 256$|^identity (is \d+ bytes in UTF-8, "
                  r"over the limit of 256$|is \d+ characters, over the limit of 256$|must hold a visible character|"
                  r"holds U\+FFFD)", "an identity holds at most 256 UTF-8 bytes, and as many characters in Unicode "
                  "NFC, and one visible character: JSON Schema's maxLength counts the characters sent, and a pattern "
                  "has no Unicode categories (all three are documented); a generated string may hold a lone "
                  "surrogate, which no UTF-8 request can carry (it arrives as U+FFFD)"),
    Inexpressible(r"", 400, r"^a face id is an integer from 0 to 9223372036854775807, got \d{19}$", "a face id in "
                  "a body is a decimal string of a 64-bit integer: the pattern caps its 19 digits, not its value"),
    Inexpressible(rf"^POST /v1{GALLERY}/calibration$", 400, r"^(an FPIR of \S+ needs at least \d+ unknown-person "
                  r"trials; this gallery gave|calibration needs faces of at least two identities|a tail model needs at "
                  r"least \d+ identities|no threshold keeps FPIR at)", "a calibration needs enough people in the "
                  "gallery, told apart by its model: the gallery's state, not the request's shape"),
    Inexpressible(rf"^POST /v1{GALLERY}/identities/\{{identity\}}/(merge|faces/\{{face\}}/move)$", 400,
                  r"^(merging an identity into itself|face \d+ is already )", "the body's identity must differ from "
                  "the path's: JSON Schema cannot compare a body field with a path parameter"),
    Inexpressible(rf"^POST /v1{GALLERY}/search(/embedding)?$", 400, r"^(an FPIR needs the gallery's calibration|the "
                  r"gallery's calibration can answer an FPIR between|the gallery's calibration keeps no FPIR curve|"
                  r"give a threshold or an FPIR, not both)", "a rate is read from the gallery's calibration (its "
                  "state: whether there is one, and the rates it measured); threshold and fpir exclude each other "
                  "across form fields"),
)
# two galleries beside the default one, and two keys: one reaches the default gallery and "shop", the other
# "staff" only; neither ever sees a name of a gallery it does not reach
SHOP, STAFF = "shop", "staff"
GALLERY_NAME = NAME_RULES["pattern"]
DEFAULT = f"contract_lite_{os.getpid()}"
NAMES = {DEFAULT: ("home_ann", "home_bob"), SHOP: ("shop_erin",), STAFF: ("staff_carol", "staff_dave")}
ADMIN_KEY, ADMIN_ENTRY = new_key("contract_admin", ["read", "write", "admin"])


@dataclass(frozen=True)
class Reach:
    key: str
    entry: str
    galleries: tuple[str, ...]

    def foreign(self) -> list[str]:
        return [name for gallery, names in NAMES.items() if gallery not in self.galleries for name in names]


KEYS = [Reach(*new_key("front", ["read", "write"], [DEFAULT, SHOP]), (DEFAULT, SHOP)),
        Reach(*new_key("staff", ["read", "write"], [STAFF]), (STAFF,))]


# the API on Milvus Lite: the store holds its contract on both stores (tests/indexer), "server" runs it there
@pytest.fixture(scope="module", params=["lite"])
def contract_api(request, tmp_path_factory, tiny_model_dir):
    tmp = tmp_path_factory.mktemp("contract")
    uri = str(tmp / "contract.db") if request.param == "lite" else request.getfixturevalue("milvus_server_uri")
    app_settings = Settings(model=tiny_model_dir, api_keys=",".join([ADMIN_ENTRY] + [k.entry for k in KEYS]),
                            milvus_uri=uri, gallery=DEFAULT, max_upload_bytes=200_000, max_pixels=1_000_000,
                            audit_dir=tmp / "audit")
    with live_app(create_app(app_settings)) as base:
        with httpx.Client(base_url=base, timeout=60, headers={"X-API-Key": ADMIN_KEY}) as client:
            for gallery in (SHOP, STAFF):
                assert client.post("/v1/galleries", json={"name": gallery}).status_code == 201
            person = 0
            for gallery, names in NAMES.items():  # faces for the reads to find
                prefix = "/v1" if gallery == DEFAULT else f"/v1/galleries/{gallery}"
                for name in names:
                    person += 1
                    assert client.post(f"{prefix}/identities/{name}/faces",
                                       files=[("images", ("a.png", png(person)))]).status_code == 201
        yield {reach: schemathesis.openapi.from_url(f"{base}/openapi.json", config=schemathesis.Config.from_dict({
            "auth": {"openapi": {"APIKeyHeader": {"api_key": reach.key}}},
            "generation": {"max-examples": EXAMPLES},
            "checks": {"enabled": True},
        })) for reach in KEYS}


def test_every_operation_keeps_the_contract_and_no_answer_crosses_galleries(contract_api):
    failures, excused, operations = {}, set(), 0
    for reach, schema in contract_api.items():  # half the examples with each key: the same time as with one
        for result in schema.get_all_operations():
            operation = result.ok()
            operations += 1
            _check_operation(operation, reach, failures, excused)
    assert operations >= 80  # the default gallery's routes, the named galleries' and the galleries' own, twice
    assert not failures, f"{len(failures)} kinds of contract failure:\n" + "\n".join(
        f"{label}: {title}: {status}: {example}" for (label, title, status), example in sorted(failures.items()))


def _check_operation(operation, reach: Reach, failures: dict, excused: set) -> None:
    cases = operation.as_strategy(GenerationMode.POSITIVE) | operation.as_strategy(GenerationMode.NEGATIVE)
    foreign = reach.foreign()

    @given(case=cases, gallery=st.sampled_from([SHOP, STAFF, None]))
    @settings(max_examples=max(1, EXAMPLES // 2), deadline=None, suppress_health_check=list(HealthCheck),
              database=None)
    def check(case, gallery) -> None:
        drawn = (case.path_parameters or {}).get("gallery")
        if gallery is not None and drawn is not None and re.fullmatch(GALLERY_NAME, drawn):
            case.path_parameters["gallery"] = gallery  # a real gallery, reached or not; a drawn invalid name stays
        response = case.call(timeout=60)
        label, detail = case.operation.label, _detail(response)
        crossed = [n for n in foreign if n in response.text]
        keyed = response.request.headers.get("x-api-key") == reach.key  # a negative case may drop or change it
        out_of_reach = keyed and case.path_parameters and case.path_parameters.get("gallery") == gallery \
            and gallery is not None and gallery not in reach.galleries
        if crossed or (out_of_reach and response.status_code != 404):
            failures.setdefault((label, f"{reach.entry.split(':')[0]}: an answer about a gallery out of reach",
                                 response.status_code), f"{detail[:200]} | names {crossed}")
        try:
            case.validate_response(response)
        except FailureGroup as group:  # collect every operation's failures, then report them all at once
            for failure in group.exceptions:
                reason = next((i for i in INEXPRESSIBLE if failure.title == "Schema-valid request rejected"
                               and i.excuses(label, response.status_code, detail)), None)
                if reason is not None:
                    excused.add(reason.why)
                else:  # one example of each kind of failure: (operation, check, status)
                    failures.setdefault((label, failure.title, response.status_code),
                                        f"{detail[:200]} | {(failure.message or '')[:300]}")

    (check if SEED == "random" else seed(int(SEED))(check))()


def _detail(response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    return str(body.get("detail", "")) if isinstance(body, dict) else ""
