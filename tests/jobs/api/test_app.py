"""The HTTP API over real HTTP (uvicorn on loopback), on Milvus Lite (the store's
contract holds on both stores: tests/indexer)."""

import io
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest
from PIL import Image

from common.errors import BadInput
from embedder.embed import TorchEmbedder
from embedder.preprocess import decode_image
from indexer.archive import FaceArchive
from jobs.api.app import create_app
from jobs.settings import Settings
from tests.helpers import READ_ENTRY, READ_KEY, TINY_DIM, TINY_THRESHOLD, WRITE_ENTRY, R, W, live_app, png


# the API on Milvus Lite: the store holds its contract on both stores (tests/indexer), "server" runs it there
@pytest.fixture(scope="module", params=["lite"])
def api(request, tmp_path_factory, tiny_model_dir):
    uri = (str(tmp_path_factory.mktemp("api") / "api.db") if request.param == "lite"
           else request.getfixturevalue("milvus_server_uri"))
    gallery = f"api_{request.param}_{int(time.time())}"
    archive = str(tmp_path_factory.mktemp("archive"))
    settings = Settings(model=tiny_model_dir, api_keys=f"{READ_ENTRY},{WRITE_ENTRY}", milvus_uri=uri,
                        gallery=gallery, max_upload_bytes=200_000, max_pixels=1_000_000, archive_uri=archive)
    with live_app(create_app(settings)) as base, httpx.Client(base_url=base, timeout=60) as client:
        client.archive = FaceArchive(archive, gallery)  # what the service keeps for the next model
        yield client


def enroll(api, identity, *images, metadata=None):
    files = [("images", (f"{i}.png", data, "image/png")) for i, data in enumerate(images)]
    data = {"metadata": metadata} if metadata else None
    return api.post(f"/v1/identities/{identity}/faces", files=files, data=data, headers=W)


def test_health_and_ready_are_open_everything_else_needs_a_key(api):
    assert api.get("/v1/health").json() == {"status": "ok"}
    assert api.get("/v1/identities").status_code == 401
    assert api.get("/v1/identities", headers={"X-API-Key": "am_wrong"}).status_code == 401
    ready = api.get("/v1/ready")  # open, like /v1/health: an orchestrator's probe has no key ...
    assert ready.status_code == 200 and ready.json() == {"status": "ready"}  # ... and learns nothing else
    assert api.get("/v1/ready", headers={"X-API-Key": "am_wrong"}).json() == {"status": "ready"}
    detailed = api.get("/v1/ready", headers=R).json()  # a key with the read scope: what the process serves
    assert detailed["status"] == "ready" and detailed["dim"] == TINY_DIM and detailed["collection"]
    assert api.post("/v1/identities/x/faces", files=[("images", ("a.png", png(1)))], headers=R).status_code == 403


def test_enroll_then_search_by_image_and_by_embedding(api, tiny_model_dir):
    response = enroll(api, "ann", png(1), png(1, 1), metadata='{"team": "blue"}')
    assert response.status_code == 201 and len(response.json()["face_ids"]) == 2
    again = enroll(api, "ann", png(1), metadata='{"seat": 4}')  # the same photo again is the same face
    assert again.json()["face_ids"][0] == response.json()["face_ids"][0]
    twice = enroll(api, "ann", png(1, 1), png(1, 1))  # and twice in one request, one face named once
    assert twice.json()["face_ids"] == response.json()["face_ids"][1:]
    enroll(api, "bob", png(2))

    found = api.post("/v1/search", files={"image": ("p.png", png(1), "image/png")}, headers=R).json()["faces"][0]
    assert found["match"] and found["identity"] == "ann" and found["score"] == pytest.approx(1.0, abs=1e-4)
    assert found["candidates"][0]["identity"] == "ann" and found["threshold"] == TINY_THRESHOLD
    for person, name in ((1, "ann"), (2, "bob")):  # another photo of each: the model tells the two apart
        other = api.post("/v1/search", files={"image": ("p.png", png(person, 3), "image/png")}, headers=R).json()
        assert other["faces"][0]["identity"] == name and other["faces"][0]["score"] < 1 - 1e-3
    stranger = api.post("/v1/search", files={"image": ("p.png", png(99), "image/png")}, headers=R).json()["faces"][0]
    assert not stranger["match"] and stranger["identity"] is None

    strict = api.post("/v1/search", files={"image": ("p.png", png(2, 5), "image/png")},
                      data={"threshold": "0.99999"}, headers=R).json()["faces"][0]
    assert not strict["match"] and strict["identity"] is None and strict["candidates"]

    embedder = TorchEmbedder.from_checkpoint(tiny_model_dir)
    vector = embedder.embed(decode_image(png(2), embedder.spec)[None])[0]
    answers = api.post("/v1/search/embedding", json={"embeddings": [vector.tolist()]}, headers=R).json()
    assert answers[0]["identity"] == "bob"
    identity = api.get("/v1/identities/ann", headers=R).json()
    assert len(identity["faces"]) == 2
    # a photo enrolled again keeps the metadata it was given before, where the new request does not set a key
    again_id = again.json()["face_ids"][0]
    kept = {f["face_id"]: f["metadata"] for f in identity["faces"]}
    assert kept[again_id]["team"] == "blue" and kept[again_id]["seat"] == 4 and "sha256" in kept[again_id]
    assert [m.get("seat") for i, m in kept.items() if i != again_id] == [None]


def test_pagination_and_deletes(api):
    for name in ("p1", "p2", "p3"):
        enroll(api, name, png(10 + int(name[1])))
    seen, cursor = [], None
    while True:
        page = api.get("/v1/identities", params={"limit": 2, **({"cursor": cursor} if cursor else {})},
                       headers=R).json()
        seen += [i["identity"] for i in page["identities"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(seen) and {"p1", "p2", "p3"} <= set(seen) and len(seen) == len(set(seen))

    archived = {e.face_id: e.identity for e in api.archive.entries()}
    faces = {name: int(api.get(f"/v1/identities/{name}", headers=R).json()["faces"][0]["face_id"])
             for name in ("p1", "p2", "p3")}
    assert all(archived[face] == name for name, face in faces.items())  # each enrolled face is archived
    face = faces["p1"]
    assert api.delete(f"/v1/identities/p2/faces/{face}", headers=W).status_code == 404  # not p2's face
    assert face in api.archive.live_versions()  # ... and its archived image stays too
    assert api.delete(f"/v1/identities/p1/faces/{face}", headers=W).json()["deleted_face"] == str(face)
    assert api.get("/v1/identities/p1", headers=R).status_code == 404
    assert api.delete("/v1/identities/p3", headers=W).json()["deleted_faces"] == 1
    assert api.delete("/v1/identities/p3", headers=W).status_code == 404
    live = api.archive.live_versions()  # a deleted face never comes back on a re-embed
    assert faces["p1"] not in live and faces["p3"] not in live and faces["p2"] in live


def test_a_name_with_a_slash_is_addressed_by_path_with_it_encoded(api):
    """"AC/DC" is sent as AC%2FDC (as arcmatch_client does); every identity route reads it whole."""
    name, path = "AC/DC", "/v1/identities/AC%2FDC"
    assert api.post(f"{path}/faces", files=[("images", ("a.png", png(40), "image/png"))], headers=W).json()[
        "identity"] == name
    answer = api.get(path, headers=R).json()
    assert answer["identity"] == name
    face = answer["faces"][0]["face_id"]
    assert api.get("/v1/identities/AC", headers=R).status_code == 404  # not the name cut at its slash
    assert enroll(api, "ACDC", png(41)).status_code == 201
    merged = api.post("/v1/identities/ACDC/merge", json={"identity": name, "proceed": True}, headers=W)
    assert merged.status_code == 200, merged.text
    typo = api.post(f"/v1/identities/ACDC/faces/{face}/move", json={"identity": "AC/DC/2"}, headers=W)
    assert typo.status_code == 404 and "no identity 'AC/DC/2' in the gallery" in typo.json()["detail"]
    moved = api.post(f"/v1/identities/ACDC/faces/{face}/move", json={"identity": "AC/DC/2", "new": True}, headers=W)
    assert moved.json()["identity"] == "AC/DC/2"
    assert api.delete(f"/v1/identities/AC%2fDC%2F2/faces/{face}", headers=W).json()["deleted_face"] == face
    assert api.get("/v1/identities/AC%2FDC%2F2", headers=R).status_code == 404
    assert api.delete("/v1/identities/ACDC", headers=W).json()["deleted_faces"] == 1


@pytest.mark.parametrize("payload", ['" or 1==1 or "', 'x" || identity != "', "a\\", "') or ('1'=='1"])
def test_filter_injection_deletes_and_leaks_nothing(api, payload):
    enroll(api, "victim", png(30))
    before = api.get("/v1/identities", params={"limit": 1000}, headers=R).json()["identities"]
    assert api.get(f"/v1/identities/{payload}", headers=R).status_code == 404
    assert api.delete(f"/v1/identities/{payload}", headers=W).status_code == 404
    assert api.get("/v1/identities", params={"limit": 1000}, headers=R).json()["identities"] == before
    created = enroll(api, payload, png(31))
    assert created.status_code == 201
    assert api.delete(f"/v1/identities/{payload}", headers=W).json()["deleted_faces"] == 1
    assert api.get("/v1/identities/victim", headers=R).status_code == 200


BAD_REQUESTS = {
    "not an image": (415, lambda api: api.post("/v1/search", files={"image": ("x.png", b"not an image", "image/png")},
                                                headers=R)),
    "empty upload": (400, lambda api: api.post("/v1/search", files={"image": ("x.png", b"", "image/png")},
                                               headers=R)),
    "upload over the limit": (413, lambda api: api.post("/v1/search", headers=R,
                                                        files={"image": ("big.bin", b"0" * 300_000, "image/png")})),
    "short embedding": (400, lambda api: api.post("/v1/search/embedding", json={"embeddings": [[0.1, 0.2]]},
                                                  headers=R)),
    "zero embedding": (400, lambda api: api.post("/v1/search/embedding", json={"embeddings": [[0.0] * TINY_DIM]},
                                                 headers=R)),
    "no embeddings": (422, lambda api: api.post("/v1/search/embedding", json={"embeddings": []}, headers=R)),
    "metadata not an object": (400, lambda api: api.post("/v1/identities/ann/faces", data={"metadata": "[1]"},
                                                         files=[("images", ("a.png", png(1)))], headers=W)),
    "metadata not JSON": (400, lambda api: api.post("/v1/identities/ann/faces", data={"metadata": "{x"},
                                                    files=[("images", ("a.png", png(1)))], headers=W)),
    "blank identity": (400, lambda api: api.post("/v1/identities/%20/faces", files=[("images", ("a.png", png(1)))],
                                                 headers=W)),
    "limit 0": (422, lambda api: api.get("/v1/identities", params={"limit": 0}, headers=R)),
    "unknown route": (404, lambda api: api.get("/v1/nothing-here", headers=R)),
    "wrong method": (405, lambda api: api.put("/v1/search", headers=R)),
    "face id not a number": (422, lambda api: api.delete("/v1/identities/ann/faces/abc", headers=W)),
    # what an independent probe found answering 500 or 503: each is the caller's mistake
    "metadata nested deeply": (400, lambda api: enroll(api, "ann", png(1), metadata="[" * 5000 + "]" * 5000)),
    "metadata nested past the limit": (400, lambda api: enroll(api, "ann", png(1), metadata='{"a":' * 12 + "1"
                                                                + "}" * 12)),
    "metadata integer beyond int64": (400, lambda api: enroll(api, "ann", png(1),
                                                              metadata='{"n": 18446744073709551616}')),
    "metadata setting arcmatch's own key": (400, lambda api: enroll(api, "ann", png(1), metadata='{"sha256": "x"}')),
    "two images to one search": (400, lambda api: api.post("/v1/search", headers=R, files=[
        ("image", ("a.png", png(1), "image/png")), ("image", ("b.png", png(2), "image/png"))])),
    "JPEG that does not decode": (400, lambda api: api.post("/v1/search", headers=R,
                                                            files={"image": ("x.jpg", b"\xff\xd8\xff", "image/jpeg")})),
    "identity not UTF-8": (400, lambda api: api.post("/v1/identities/%FF/faces", files=[("images", ("a.png", png(1)))],
                                                     headers=W)),
    "identity only a zero-width space": (400, lambda api: enroll(api, "\u200b", png(1))),
    "identity of 65 emoji": (400, lambda api: enroll(api, "\U0001F600" * 65, png(1))),
    "face id beyond int64": (422, lambda api: api.delete(f"/v1/identities/ann/faces/{2**64}", headers=W)),
    "EPS upload": (415, lambda api: api.post("/v1/search", files={"image": ("x.eps", EPS, "image/png")}, headers=R)),
    "PDF upload": (415, lambda api: api.post("/v1/search", files={"image": ("x.jpg", b"%PDF-1.4\n%", "image/jpeg")},
                                             headers=R)),
    "too many images": (400, lambda api: enroll(api, "ann", *[png(1, n) for n in range(17)])),
    "embeddings nested deeply": (400, lambda api: api.post(
        "/v1/search/embedding", content=b'{"embeddings": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        headers={**R, "content-type": "application/json"})),
    "invalid body without a key": (401, lambda api: api.post("/v1/search/embedding", content=b"{x",
                                                             headers={"content-type": "application/json"})),
    "JSON over its cap": (413, lambda api: api.post("/v1/search/embedding", headers=R,
                                                    json={"embeddings": [[0.1] * TINY_DIM] * 200_000})),
}

EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"


@pytest.mark.parametrize("value", ["1e39", "-1e39", "1e308", "3.5e38"])
def test_a_value_no_float32_holds_is_refused_at_its_position(api, value):
    # JSON numbers as written: finite as a float64
    rows = [["0.1"] * TINY_DIM, ["0.1"] * 11 + [value] * (TINY_DIM - 11)]
    body = '{"embeddings": [' + ", ".join("[" + ", ".join(row) + "]" for row in rows) + "]}"
    answer = api.post("/v1/search/embedding", content=body.encode(), headers={**R, "content-type": "application/json"})
    assert answer.status_code == 400, answer.text
    detail = answer.json()["detail"]
    assert detail.startswith("embeddings[1][11] is ") and "finite 32-bit float" in detail


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=list(BAD_REQUESTS))
def test_bad_requests_get_json_4xx_without_traces(api, case):
    status, request = BAD_REQUESTS[case]
    response = request(api)
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "detail"} and body["error"] and body["detail"]
    assert "Traceback" not in response.text


def test_a_wrong_method_names_every_method_the_path_has(api):
    answer = api.put("/v1/identities/ann", headers=W)
    assert answer.status_code == 405 and answer.headers["allow"] == "DELETE, GET"
    for method in ("OPTIONS", "GET"):  # "merge" is no cluster id: only the merge itself is allowed there
        answer = api.request(method, "/v1/clusters/merge", headers=W)
        assert answer.status_code == 405 and answer.headers["allow"] == "POST", method


def test_an_image_over_the_pixel_limit_is_refused(api):
    big = Image.new("L", (2000, 2000))
    buf = io.BytesIO()
    big.save(buf, "PNG")
    bomb = api.post("/v1/search", files={"image": ("big.png", buf.getvalue(), "image/png")}, headers=R)
    assert bomb.status_code == 400 and "pixels" in bomb.json()["detail"]


def test_openapi_is_served(api):
    spec = api.get("/openapi.json").json()
    assert "/v1/search" in spec["paths"] and "/v1/identities/{identity}" in spec["paths"]


def test_the_app_needs_keys_and_a_model(tmp_path, monkeypatch):
    monkeypatch.delenv("ARCMATCH_API_KEYS", raising=False)
    with pytest.raises(BadInput, match="ARCMATCH_API_KEYS"):
        create_app(Settings(model=tmp_path, _env_file=None))


def test_every_answer_says_how_long_the_app_took(api):
    response = api.get("/v1/ready")  # a 401 too
    name, value = response.headers["server-timing"].split(";dur=")
    assert name == "app" and float(value) >= 0


def test_a_search_answer_times_the_search_inside_the_app(api):
    response = api.post("/v1/search/embedding", json={"embeddings": [[0.25] * TINY_DIM]}, headers=R)
    assert response.status_code == 200
    phases = dict(part.split(";dur=") for part in response.headers["server-timing"].split(", "))
    assert set(phases) == {"app", "search"} and 0 <= float(phases["search"]) <= float(phases["app"])


def test_a_bug_inside_a_search_is_a_500_that_says_nothing_of_it(tmp_path, tiny_model_dir, monkeypatch):
    from fastapi.testclient import TestClient

    from jobs.service import IdentityService

    settings = Settings(model=tiny_model_dir, api_keys=READ_ENTRY, milvus_uri=str(tmp_path / "bug.db"),
                        _env_file=None)
    service = IdentityService.open(settings, create=True)

    def broken_search(vectors, k=10, ef=None):
        return np.zeros((len(vectors), 3)) @ np.zeros((4, k))  # a shape bug: numpy raises ValueError

    monkeypatch.setattr(service.index, "search", broken_search)
    with TestClient(create_app(settings, provider=lambda: (service, None)), raise_server_exceptions=False) as client:
        response = client.post("/v1/search/embedding", json={"embeddings": [[0.25] * TINY_DIM]}, headers=R)
    service.close()
    assert response.status_code == 500
    assert response.json() == {"error": "internal error", "detail": "the service could not complete the request"}
    assert "matmul" not in response.text and "shape" not in response.text


def test_serving_an_onnx_model_never_imports_torch(tmp_path, tiny_onnx_dir):
    script = (
        "import sys\n"
        "from fastapi.testclient import TestClient\n"
        "from jobs.api.app import create_app\n"
        "from jobs.settings import Settings\n"
        f"settings = Settings(model={str(tiny_onnx_dir)!r}, api_keys={READ_ENTRY!r}, "
        f"milvus_uri={str(tmp_path / 'onnx.db')!r}, _env_file=None)\n"
        "with TestClient(create_app(settings)) as client:\n"
        f"    answer = client.post('/v1/search/embedding', json={{'embeddings': [[0.25] * {TINY_DIM}]}}, "
        f"headers={{'X-API-Key': {READ_KEY!r}}})\n"
        "assert answer.status_code == 200, answer.text\n"
        "print('torch' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "False"
