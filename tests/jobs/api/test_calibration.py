"""The gallery's calibration over HTTP: which threshold searches use, choosing one from the gallery's own faces,
keeping and clearing it (on Milvus Lite)."""

import time

import httpx
import pytest

from jobs.api.app import create_app
from jobs.settings import Settings
from tests.helpers import READ_ENTRY, TINY_DIM, TINY_THRESHOLD, WRITE_ENTRY, R, W, live_app, png, untrained_model

AXIS = [1.0] + [0.0] * (TINY_DIM - 1)  # a probe by embedding


# the API on Milvus Lite: the store holds its contract on both stores (tests/indexer), "server" runs it there
@pytest.fixture(scope="module", params=["lite"])
def api(request, tmp_path_factory, tiny_model_dir):
    uri = (str(tmp_path_factory.mktemp("cal") / "cal.db") if request.param == "lite"
           else request.getfixturevalue("milvus_server_uri"))
    settings = Settings(model=tiny_model_dir, api_keys=f"{READ_ENTRY},{WRITE_ENTRY}", milvus_uri=uri,
                        gallery=f"cal_{request.param}_{int(time.time())}",
                        archive_uri=str(tmp_path_factory.mktemp("archive")))
    with live_app(create_app(settings)) as base, httpx.Client(base_url=base, timeout=60) as client:
        for person in range(30):
            files = [("images", (f"{n}.png", png(person, n), "image/png")) for n in range(2 if person < 10 else 1)]
            assert client.post(f"/v1/identities/p{person}/faces", files=files, headers=W).status_code == 201
        yield client


def search_threshold(api) -> float:
    return api.post("/v1/search", files={"image": ("p.png", png(3, 7), "image/png")},
                    headers=R).json()["faces"][0]["threshold"]


def test_choose_keep_use_and_clear_the_gallery_threshold(api):
    before = api.get("/v1/calibration", headers=R).json()
    assert before == {"threshold": TINY_THRESHOLD, "source": "model", "gallery": None, "status": None}

    dry = api.post("/v1/calibration", json={"fpir": 0.1, "dry_run": True, "method": "top1"}, headers=W)
    assert dry.status_code == 200, dry.text
    result = dry.json()
    assert result["faces"] == 40 and result["identities"] == 30 and result["nonmated_trials"] == 40
    assert result["mated_trials"] == 20 and result["fpir"] <= 0.1 and result["model_threshold"] == TINY_THRESHOLD
    assert api.get("/v1/calibration", headers=R).json()["source"] == "model"

    kept = api.post("/v1/calibration", json={"fpir": 0.1, "method": "top1"}, headers=W).json()
    now = api.get("/v1/calibration", headers=R).json()
    assert now["source"] == "gallery" and now["threshold"] == kept["threshold"] == result["threshold"]
    assert search_threshold(api) == pytest.approx(kept["threshold"])

    points = {p["label"]: p for p in kept["points"]}
    assert set(points) == {"stricter", "chosen", "looser", "model"}
    assert points["chosen"]["threshold"] == kept["threshold"] and points["model"]["threshold"] == TINY_THRESHOLD
    assert points["chosen"]["fpir_low"] <= kept["fpir"] <= points["chosen"]["fpir_high"]
    assert kept["curve"] and all(len(row) == 3 for row in kept["curve"])

    # a rate instead of a cosine, read from the kept curve; a stricter rate, a stricter threshold
    asked = api.post("/v1/search/embedding", json={"embeddings": [AXIS], "fpir": 0.1}, headers=R)
    assert asked.status_code == 200, asked.text
    assert asked.json()[0]["threshold"] == pytest.approx(kept["threshold"], abs=0.02)
    photo = api.post("/v1/search", files={"image": ("p.png", png(3, 7), "image/png")}, data={"fpir": "0.05"},
                     headers=R)
    assert photo.status_code == 200 and photo.json()["faces"][0]["threshold"] >= asked.json()[0]["threshold"]
    both = api.post("/v1/search/embedding", json={"embeddings": [AXIS], "fpir": 0.1,
                                                   "threshold": 0.5}, headers=R)
    assert both.status_code == 400 and "not both" in both.json()["detail"]
    beyond = api.post("/v1/search/embedding", json={"embeddings": [AXIS], "fpir": 1e-5}, headers=R)
    assert beyond.status_code == 400 and "give a threshold instead" in beyond.json()["detail"]
    assert "at its 30 identities, not 1e-05" in beyond.json()["detail"]  # the rate asked, at the size asked

    cleared = api.delete("/v1/calibration", headers=W)
    assert cleared.status_code == 200 and cleared.json()["source"] == "model"
    assert search_threshold(api) == TINY_THRESHOLD
    none = api.post("/v1/search/embedding", json={"embeddings": [AXIS], "fpir": 0.1}, headers=R)
    assert none.status_code == 400 and "calibrate" in none.json()["detail"]


@pytest.mark.parametrize(("body", "status", "says"), [
    ({"fpir": 0.001, "method": "top1"}, 400, "needs at least 1000 unknown-person trials"),
    ({"fpir": 1.5}, 422, "fpir"),
    ({"fpir": 0.9}, 422, "less than or equal to 0.5"),  # no threshold at all: the curve reads up to half
    ({"fpir": 1e-6}, 422, "greater than or equal to 0.0001"),  # below, a modelled tail is extrapolation
    ({"fpir": 0.1, "sample": 49}, 422, "sample"),
])
def test_bad_calibration_requests_say_what_is_wrong(api, body, status, says):
    response = api.post("/v1/calibration", json=body, headers=W)
    assert response.status_code == status and says in response.text


def test_calibrating_needs_the_write_scope(api):
    assert api.post("/v1/calibration", json={"fpir": 0.1}, headers=R).status_code == 403
    assert api.delete("/v1/calibration", headers=R).status_code == 403
    assert api.get("/v1/calibration").status_code == 401


@pytest.fixture(scope="module")
def alike(tmp_path_factory, tiny_spec):
    """A gallery whose model sees everyone alike (an untrained one scores any two faces about 0.97), each person
    enrolled with `proceed`, since every face matches someone."""
    model = untrained_model(tmp_path_factory.mktemp("untrained"), tiny_spec, seed=0, threshold=0.5)
    settings = Settings(model=model, api_keys=f"{READ_ENTRY},{WRITE_ENTRY}", archive=False,
                        milvus_uri=str(tmp_path_factory.mktemp("alike") / "alike.db"))
    with live_app(create_app(settings)) as base, httpx.Client(base_url=base, timeout=60) as client:
        for person in range(30):
            files = [("images", ("0.png", png(person), "image/png"))]
            assert client.post(f"/v1/identities/p{person}/faces", files=files, data={"proceed": "true"},
                               headers=W).status_code == 201
        yield client


def test_the_tail_method_is_the_default_and_says_when_no_threshold_can_keep_the_target(alike):
    # no cosine keeps strangers out, and it says so
    answer = alike.post("/v1/calibration", json={"fpir": 0.1, "dry_run": True}, headers=W)
    assert answer.status_code == 400 and "no threshold keeps FPIR at 0.1" in answer.json()["detail"]
    assert "as alike as one person's photos" in answer.json()["detail"]
    assert alike.get("/v1/calibration", headers=R).json()["source"] == "model"  # nothing kept


def test_the_gallery_check_over_http_reads_every_face_for_a_read_key(api):
    assert api.get("/v1/gallery/check").status_code == 401
    answer = api.get("/v1/gallery/check", headers=R)
    assert answer.status_code == 200, answer.text
    report = answer.json()
    assert (report["identities"], report["faces"]) == (30, 40) and report["below_gate"] == []
    assert all(set(d) == {"first", "second", "score", "expected_among_strangers", "misfiled", "same_photo"}
               for d in report["duplicates"])
    assert all(isinstance(m["face_id"], str) for m in report["misfits"])


def test_a_small_gallery_calibrated_over_http_gives_both_opinions_of_a_model_that_kept_a_reference(
        tmp_path, tiny_model_dir):
    """The model's `eval --calibrate` kept a tail reference: the service's collection records it, and the tail
    calibration of a gallery under 300 people answers with the threshold of each opinion (indexer/reference.py)."""
    import shutil
    from dataclasses import replace

    import numpy as np

    from embedder.layout import Calibration
    from indexer.reference import TailReference
    from tests.helpers import people

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    held = people(300, 1, spread=0.3, dim=TINY_DIM, seed=7)
    reference = TailReference.measure(np.stack([r.vector for r in held]), np.array([r.identity for r in held]))
    replace(Calibration.load(model), tail_reference=reference.to_dict()).save(model)
    settings = Settings(model=model, api_keys=f"{READ_ENTRY},{WRITE_ENTRY}", milvus_uri=str(tmp_path / "r.db"),
                        gallery="referenced", archive=False)
    with live_app(create_app(settings)) as base, httpx.Client(base_url=base, timeout=60) as client:
        for person in range(30):
            files = [("images", ("0.png", png(person, 0), "image/png"))]
            assert client.post(f"/v1/identities/p{person}/faces", files=files, headers=W).status_code == 201
        result = client.post("/v1/calibration", json={"fpir": 0.1, "dry_run": True}, headers=W).json()
    said = result["reference"]
    assert said["identities"] == 300 and result["threshold"] == pytest.approx(
        max(said["own_threshold"], said["reference_threshold"]), abs=2e-3)


def test_a_gallery_of_a_model_nobody_calibrated_is_enrolled_then_calibrated(tmp_path, tiny_model_dir):
    import shutil

    from embedder.layout import CALIBRATION_FILE

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    (model / CALIBRATION_FILE).unlink()
    settings = Settings(model=model, api_keys=f"{READ_ENTRY},{WRITE_ENTRY}", archive=False,
                        milvus_uri=str(tmp_path / "bare.db"))
    with live_app(create_app(settings)) as base, httpx.Client(base_url=base, timeout=60) as client:
        shown = client.get("/v1/calibration", headers=R)  # what the review page reads before its health section
        assert shown.status_code == 200 and shown.json()["threshold"] is None and shown.json()["source"] is None
        for name in ("ann", "anne"):  # no threshold to judge a conflict by: both are enrolled, the check finds them
            files = [("images", ("0.png", png(1, 0 if name == "ann" else 1), "image/png"))]
            assert client.post(f"/v1/identities/{name}/faces", files=files, headers=W).status_code == 201
        probe = {"image": ("p.png", png(1, 2), "image/png")}
        refused = client.post("/v1/search", files=probe, headers=R)
        assert refused.status_code == 400 and "a request's threshold field" in refused.json()["detail"]
        assert client.post("/v1/search", files=probe, data={"threshold": "0.5"}, headers=R).status_code == 200
        assert client.get("/v1/identities/..", headers=R).status_code in (404, 405)  # the path's, never a name
        dots = client.post("/v1/identities/%2E%2E/faces", files=[("images", ("0.png", png(2), "image/png"))],
                           headers=W)
        assert dots.status_code == 400 and "a URL path cannot address it" in dots.json()["detail"]
