"""Resolving what the gallery check finds, over HTTP: merge two names of one person, move a photo filed under the
wrong person, "different people" (then never listed again, and kept as evidence by the next calibration); on
Milvus Lite."""

import time

import httpx
import numpy as np
import pytest

from indexer.galleries import Galleries
from indexer.ids import face_id
from indexer.store import FaceIndex, FaceRow, connect
from jobs.api.app import create_app
from jobs.settings import Settings
from tests.helpers import READ_ENTRY, TINY_DIM, WRITE_ENTRY, R, W, live_app, people, png


def planted_gallery(uri: str, gallery: str) -> dict:
    """40 people with two photos each, a twin ("person 7 again": person 7's face under a second name), a stray
    (person 3's first photo filed under person 5) and an outsider (a third photo of person 20 that is nobody
    enrolled), written beside one enrolled face (the collection's owner)."""
    client = connect(uri)
    index = FaceIndex(client, Galleries(client, gallery).serving())
    rows = people(40, 2, spread=0.3, seed=1, dim=TINY_DIM)
    twin = rows[14].vector + 0.05 * np.random.default_rng(1).normal(size=TINY_DIM).astype(np.float32)
    rows.append(FaceRow("twin", "person 7 again", (twin / np.linalg.norm(twin)).astype(np.float32), face_id("twin")))
    stray = rows[6]
    rows[6] = FaceRow(stray.source, "person 5", stray.vector, stray.face_id)
    nobody = np.random.default_rng(3).normal(size=TINY_DIM).astype(np.float32)
    rows.append(FaceRow("outsider", "person 20", nobody / np.linalg.norm(nobody), face_id("outsider")))
    index.upsert(rows)
    index.flush()
    client.close()
    return {"stray": str(stray.face_id), "outsider": str(face_id("outsider"))}


# the API on Milvus Lite: the store holds its contract on both stores (tests/indexer), "server" runs it there
@pytest.fixture(scope="module", params=["lite"])
def api(request, tmp_path_factory, tiny_model_dir):
    uri = (str(tmp_path_factory.mktemp("health") / "h.db") if request.param == "lite"
           else request.getfixturevalue("milvus_server_uri"))
    gallery = f"health_{request.param}_{int(time.time())}"
    settings = Settings(model=tiny_model_dir, api_keys=f"{READ_ENTRY},{WRITE_ENTRY}", milvus_uri=uri,
                        gallery=gallery, archive_uri=str(tmp_path_factory.mktemp("archive")))
    with live_app(create_app(settings)) as base, httpx.Client(base_url=base, timeout=60) as client:
        files = [("images", ("o.png", png(99), "image/png"))]
        assert client.post("/v1/identities/owner/faces", files=files, headers=W).status_code == 201
        planted = planted_gallery(uri, gallery)
        yield client, {**planted, "uri": uri, "gallery": gallery}


def pairs(client) -> set:
    return {(d["first"], d["second"]) for d in client.get("/v1/gallery/check", headers=R).json()["duplicates"]}


def test_different_people_are_never_listed_again_and_kept_as_a_pair(api):
    client, _ = api
    assert ("person 7", "person 7 again") in pairs(client)
    said = client.post("/v1/gallery/distinct", json={"identities": ["person 7 again", "person 7"]}, headers=W)
    assert said.status_code == 200, said.text
    assert said.json()["pairs"] == [["person 7", "person 7 again"]]
    assert ("person 7", "person 7 again") not in pairs(client)
    assert client.get("/v1/gallery/distinct", headers=R).json() == said.json()
    calibrated = client.post("/v1/calibration", json={"fpir": 0.05, "method": "tail", "dry_run": True}, headers=W)
    assert calibrated.status_code == 200, calibrated.text
    result = calibrated.json()
    assert result["method"].startswith("gallery cross-identity scores") and result["top1_threshold"] is not None
    assert result["fpir_interval"][0] <= result["fpir"] <= result["fpir_interval"][1]
    assert all({s["first"], s["second"]} != {"person 7", "person 7 again"} for s in result["suspects"])


def test_unlabelled_faces_are_confirmed_strangers_by_source(api):
    client, planted = api
    store = connect(planted["uri"])
    index = FaceIndex(store, Galleries(store, planted["gallery"]).serving())
    visitors = [FaceRow(f"visitors/{n}.jpg", "", r.vector, face_id(f"visitors/{n}.jpg"))
                for n, r in enumerate(people(2, 1, spread=0.3, seed=5, first=900, dim=TINY_DIM))]
    index.upsert(visitors)
    index.flush()
    refused = client.post("/v1/gallery/strangers", json={"sources": ["visitors/0.jpg", "elsewhere.jpg"]}, headers=W)
    assert refused.status_code == 404 and "'elsewhere.jpg'" in refused.json()["detail"]
    assert client.post("/v1/gallery/strangers", json={"sources": ["visitors/0.jpg"]}, headers=R).status_code == 403
    said = client.post("/v1/gallery/strangers", json={"sources": ["visitors/0.jpg"]}, headers=W)
    assert said.status_code == 200, said.text
    assert said.json() == {"face_ids": [str(visitors[0].face_id)]}
    marks = index.stored_metadata([v.face_id for v in visitors])
    store.close()
    assert [marks[v.face_id].get("stranger") for v in visitors] == [True, None]


def test_faces_kept_from_searches_are_confirmed_strangers_at_once(api):
    client, planted = api
    store = connect(planted["uri"])
    index = FaceIndex(store, Galleries(store, planted["gallery"]).serving())
    vectors = [r.vector for r in people(3, 1, spread=0.3, seed=6, first=950, dim=TINY_DIM)]
    kept = [FaceRow(f"search:{n:016x}#0", "", v, face_id(f"kept {n}"), {"expires_at": 2_000_000_000, "below": 0.5})
            for n, v in enumerate(vectors[:2])]
    ingested = FaceRow("walk-ins/0.jpg", "", vectors[2], face_id("walk-ins/0.jpg"))
    index.upsert([*kept, ingested])
    index.flush()
    assert client.post("/v1/gallery/strangers/kept", headers=R).status_code == 403
    said = client.post("/v1/gallery/strangers/kept", headers=W)
    assert said.status_code == 200, said.text
    assert said.json() == {"face_ids": [str(f) for f in sorted(r.face_id for r in kept)]}
    marks = index.stored_metadata([r.face_id for r in [*kept, ingested]])
    assert [marks[r.face_id].get("stranger") for r in [*kept, ingested]] == [True, True, None]
    assert client.post("/v1/gallery/strangers/kept", headers=W).json() == {"face_ids": []}
    index.delete_ids([r.face_id for r in [*kept, ingested]])  # the module's other tests see the gallery as it was
    index.flush()
    store.close()


def test_a_stray_photo_is_moved_to_the_person_it_shows(api):
    client, planted = api
    misfits = client.get("/v1/gallery/check", headers=R).json()["misfits"]
    assert [m for m in misfits if m["face_id"] == planted["stray"]][0]["other"] == "person 3"
    moved = client.post(f"/v1/identities/person 5/faces/{planted['stray']}/move", json={"identity": "person 3"},
                        headers=W)
    assert moved.status_code == 200, moved.text
    assert moved.json() == {"identity": "person 3", "face_id": planted["stray"], "rejected_from": ["person 5"]}
    faces = {f["face_id"] for f in client.get("/v1/identities/person 3", headers=R).json()["faces"]}
    assert planted["stray"] in faces and len(faces) == 2
    assert planted["stray"] not in {m["face_id"] for m in client.get("/v1/gallery/check", headers=R).json()["misfits"]}


def test_a_photo_like_no_one_else_of_its_identity_is_listed_kept_when_confirmed_or_rejected(api):
    client, planted = api
    report = client.get("/v1/gallery/check", headers=R).json()
    [stray] = report["strays"]  # the misfit is said as such, once
    assert stray["face_id"] == planted["outsider"] and stray["identity"] == "person 20" and stray["chance"] >= 0.1
    wrong = client.post(f"/v1/identities/person 21/faces/{planted['outsider']}/confirm", json={}, headers=W)
    assert wrong.status_code == 404 and "has no face" in wrong.json()["detail"]
    kept = client.post(f"/v1/identities/person 20/faces/{planted['outsider']}/confirm", json={}, headers=W)
    assert kept.status_code == 200 and kept.json() == {"identity": "person 20", "face_id": planted["outsider"]}
    assert client.get("/v1/gallery/check", headers=R).json()["strays"] == []  # a hard photo, said once
    faces = client.get("/v1/identities/person 20", headers=R).json()["faces"]
    assert [f["metadata"]["confirmed_in"] for f in faces if f["face_id"] == planted["outsider"]] == ["person 20"]
    rejected = client.post(f"/v1/identities/person 20/faces/{planted['outsider']}/reject", json={}, headers=W)
    assert rejected.status_code == 200, rejected.text
    assert client.get("/v1/gallery/check", headers=R).json()["strays"] == []
    assert len(client.get("/v1/identities/person 20", headers=R).json()["faces"]) == 2


def test_two_names_are_merged_and_two_that_look_like_two_people_only_when_the_caller_insists(api):
    client, _ = api
    unlike = client.post("/v1/identities/person 9/merge", json={"identity": "person 8"}, headers=W)
    assert unlike.status_code == 409 and "they look like two people" in unlike.json()["detail"]
    merged = client.post("/v1/identities/person 9/merge", json={"identity": "person 8", "proceed": True}, headers=W)
    assert merged.status_code == 200, merged.text
    assert len(merged.json()["face_ids"]) == 2 and merged.json()["skipped"] == []
    assert client.get("/v1/identities/person 8", headers=R).status_code == 404
    assert len(client.get("/v1/identities/person 9", headers=R).json()["faces"]) == 4
    [split] = client.get("/v1/gallery/check", headers=R).json()["splits"]  # two people under one name, said so
    assert split["identity"] == "person 9" and sorted(map(len, split["groups"])) == [2, 2]
    assert sorted(map(sorted, split["sources"])) == [["p8/f0", "p8/f1"], ["p9/f0", "p9/f1"]]


@pytest.mark.parametrize(("method", "path", "body", "status", "says"), [
    ("POST", "/v1/identities/person 1/merge", {"identity": "nobody"}, 404, "no identity 'nobody'"),
    ("POST", "/v1/identities/person 1/merge", {"identity": "person 1"}, 400, "into itself"),
    ("POST", "/v1/identities/person 1/faces/12/move", {"identity": "person 2"}, 404, "has no face 12"),
    ("POST", "/v1/gallery/distinct", {"identities": ["person 1", "nobody"]}, 404, "no identity 'nobody'"),
    ("POST", "/v1/gallery/distinct", {"identities": ["person 1", "person 1"]}, 422, "two different identities"),
    ("POST", "/v1/gallery/distinct", {"identities": ["person 1"]}, 422, "identities"),
])
def test_what_cannot_be_resolved_says_why(api, method, path, body, status, says):
    client, _ = api
    answer = client.request(method, path, json=body, headers=W)
    assert answer.status_code == status and says in answer.text
    assert client.request(method, path, json=body, headers=R).status_code == 403  # writes, all of them


def set_aside_gallery(uri: str, gallery: str) -> dict:
    """40 people with two photos each and 152 unlabelled faces: 150 strangers and a photo each of person 0 and
    person 1 (an event's staff), which a calibration leaves out as looking enrolled. Returns the two by source."""
    client = connect(uri)
    index = FaceIndex(client, Galleries(client, gallery).serving())
    enrolled = people(40, 2, spread=0.3, dim=TINY_DIM)
    staff = [FaceRow(f"event/{n}.jpg", "", enrolled[2 * n].vector, face_id(f"event/{n}.jpg")) for n in range(2)]
    others = [FaceRow(f"u{n}", "", r.vector, face_id(f"u{n}"))
              for n, r in enumerate(people(150, 1, spread=0.3, seed=7, first=1000, dim=TINY_DIM))]
    index.upsert(enrolled + staff + others)
    index.flush()
    client.close()
    return {s.source: {"face_id": str(s.face_id), "like": f"person {n}"} for n, s in enumerate(staff)}


def test_faces_the_calibration_left_out_are_named_or_confirmed_and_it_says_what_each_is_now(tmp_path, tiny_model_dir):
    uri = str(tmp_path / "aside.db")
    settings = Settings(model=tiny_model_dir, api_keys=f"{READ_ENTRY},{WRITE_ENTRY}", milvus_uri=uri,
                        gallery="aside", archive_uri=str(tmp_path / "archive"))
    with live_app(create_app(settings)) as base, httpx.Client(base_url=base, timeout=60) as client:
        files = [("images", ("o.png", png(99), "image/png"))]
        assert client.post("/v1/identities/owner/faces", files=files, headers=W).status_code == 201
        staff = set_aside_gallery(uri, "aside")
        calibrated = client.post("/v1/calibration", json={"fpir": 0.05, "method": "tail"}, headers=W)
        assert calibrated.status_code == 200, calibrated.text
        aside = {f["source"]: f for f in calibrated.json()["strangers_set_aside"]}
        for source, found in staff.items():
            assert aside[source]["face_id"] == found["face_id"] and aside[source]["like"] == found["like"]
            assert aside[source]["now"] == "unlabelled"

        first, second = staff["event/0.jpg"], staff["event/1.jpg"]
        body = {"face_ids": [first["face_id"]]}
        assert client.post("/v1/identities/person 0/name", json=body, headers=R).status_code == 403
        named = client.post("/v1/identities/person 0/name", json=body, headers=W)
        assert named.status_code == 200, named.text
        assert named.json() == {"identity": "person 0", "face_ids": [first["face_id"]], "skipped": []}
        again = client.post("/v1/identities/person 0/name", json=body, headers=W)
        assert again.status_code == 409 and "already named 'person 0'" in again.json()["detail"]
        nowhere = client.post("/v1/identities/person 0/name", json={"face_ids": ["123"]}, headers=W)
        assert nowhere.status_code == 404 and "123: no longer in the gallery" in nowhere.json()["detail"]
        # a staff member's photo, which searches may answer as them: a stranger only when the caller insists
        confirmed = client.post("/v1/gallery/strangers", json={"sources": ["event/1.jpg"], "proceed": True},
                                headers=W)
        assert confirmed.status_code == 200

        stored = client.get("/v1/calibration", headers=R).json()["gallery"]
        now = {f["source"]: f for f in stored["strangers_set_aside"]}
        assert (now["event/0.jpg"]["now"], now["event/0.jpg"]["identity"]) == ("named", "person 0")
        assert now["event/1.jpg"]["now"] == "stranger" and now["event/1.jpg"]["face_id"] == second["face_id"]
        person = client.get("/v1/identities/person 0", headers=R).json()
        assert first["face_id"] in {f["face_id"] for f in person["faces"]} and len(person["faces"]) == 3
