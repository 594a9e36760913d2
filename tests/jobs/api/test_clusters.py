"""Clusters and names over real HTTP (on Milvus Lite: the store's contract holds on both): list and read clusters,
split and merge, promote to an identity, "not this person", and the enrollment conflict check."""

import httpx
import pytest

from indexer.galleries import Galleries
from indexer.ids import UNLABELLED
from indexer.store import FaceIndex, FaceRow, connect
from jobs.api.app import create_app
from jobs.pipelines.cluster import cluster
from jobs.settings import Settings
from tests.helpers import READ_ENTRY, TINY_DIM, WRITE_ENTRY, R, live_app, people, png
from tests.helpers import W as H

pytestmark = pytest.mark.stores("lite")

@pytest.fixture
def api(milvus_uri, collection_name, tmp_path, tiny_model_dir):
    gallery = collection_name
    settings = Settings(model=tiny_model_dir, api_keys=f"{WRITE_ENTRY},{READ_ENTRY}", milvus_uri=milvus_uri,
                        gallery=gallery, archive_uri=str(tmp_path / "archive"))
    with live_app(create_app(settings)) as base, httpx.Client(base_url=base, timeout=60) as client:
        assert client.post("/v1/identities/ann/faces", files=[("images", ("a.png", png(1), "image/png"))],
                           headers=H).status_code == 201
        connection = connect(milvus_uri)
        index = FaceIndex(connection, Galleries(connection, gallery).serving())
        crowd = (people(2, 4, spread=0.2, seed=3, dim=TINY_DIM)
                 + people(1, 3, spread=0.2, seed=4, first=10, dim=TINY_DIM))
        index.upsert([FaceRow(r.source, UNLABELLED, r.vector, r.face_id) for r in crowd])
        index.flush()
        client.crowd, client.index = crowd, index

        def recluster():
            cluster(milvus=milvus_uri, root=str(tmp_path / "archive"), gallery=gallery, k=6, threshold=0.6)

        client.recluster = recluster
        yield client
        connection.close()


def test_clusters_are_listed_split_merged_and_named(api):
    assert api.get("/v1/clusters", headers=R).status_code == 404  # not clustered yet: says so
    api.recluster()
    page = api.get("/v1/clusters", headers=R).json()
    assert page["total"] == 3 and [c["size"] for c in page["clusters"]] == [4, 4, 3]
    big = page["clusters"][0]
    assert big["face_ids"][0] == big["representative"] and len(big["face_ids"]) == 4
    assert api.get("/v1/clusters", params={"limit": 1, "offset": 2}, headers=R).json()["clusters"][0]["size"] == 3

    one = api.get(f"/v1/clusters/{big['cluster']}", headers=R).json()
    assert sorted(one["face_ids"]) == sorted(big["face_ids"])
    split = api.post(f"/v1/clusters/{big['cluster']}/split", json={"face_ids": one["face_ids"][-1:]}, headers=H)
    assert split.status_code == 200 and split.json()["size"] == 1
    assert api.get(f"/v1/clusters/{big['cluster']}", headers=R).json()["size"] == 3
    merged = api.post("/v1/clusters/merge", json={"clusters": [big["cluster"], split.json()["cluster"]]}, headers=H)
    assert merged.json()["size"] == 4 and merged.json()["cluster"] == big["cluster"]

    # the page's look was before the split and merge: the same faces again, so its fingerprint still holds; one
    # taken before the split would not have
    assert merged.json()["members"] == one["members"] == big["members"]
    stale = api.post(f"/v1/clusters/{big['cluster']}/promote", json={"identity": "bob", "members": split.json()[
        "members"]}, headers=H)
    assert stale.status_code == 409 and "holds other faces than when you looked" in stale.json()["detail"]
    named = api.post(f"/v1/clusters/{big['cluster']}/promote", json={"identity": "bob", "members": big["members"]},
                     headers=H)
    assert named.status_code == 200, named.text
    assert sorted(named.json()["face_ids"]) == sorted(one["face_ids"]) and named.json()["skipped"] == []
    assert len(api.get("/v1/identities/bob", headers=R).json()["faces"]) == 4
    assert api.get("/v1/clusters", headers=R).json()["total"] == 2  # named faces leave the clusters
    assert api.get(f"/v1/clusters/{big['cluster']}", headers=R).status_code == 404
    bobs = [r for r in api.crowd if str(r.face_id) in named.json()["face_ids"]]
    probe = api.post("/v1/search/embedding", json={"embeddings": [bobs[0].vector.tolist()]}, headers=R)
    assert probe.json()[0]["identity"] == "bob"


BAD = [("/v1/clusters/999/promote", {"identity": "x"}, 404),
       ("/v1/clusters/merge", {"clusters": [1]}, 422),
       ("/v1/clusters/merge", {"clusters": [0, 1, 0]}, 422),  # each cluster once, as the document says
       ("/v1/clusters/0/split", {"face_ids": ["12"]}, 400),
       ("/v1/clusters/0/promote", {"identity": ""}, 422)]


def test_bad_cluster_requests_say_what_is_wrong(api):
    api.recluster()
    for path, body, status in BAD:
        response = api.post(path, json=body, headers=H)
        assert response.status_code == status, (path, body, response.text)
    assert api.post("/v1/clusters/merge", json={"clusters": [0, 1]}, headers=R).status_code == 403


def test_not_this_person_is_remembered_by_promotion_and_enrollment(api):
    api.recluster()
    small = api.get("/v1/clusters", params={"offset": 2}, headers=R).json()["clusters"][0]
    api.post(f"/v1/clusters/{small['cluster']}/promote", json={"identity": "cy"}, headers=H)
    face = small["face_ids"][1]
    rejected = api.post(f"/v1/identities/cy/faces/{face}/reject", headers=H)
    assert rejected.status_code == 200 and rejected.json()["rejected_from"] == ["cy"]
    assert len(api.get("/v1/identities/cy", headers=R).json()["faces"]) == 2
    assert api.post(f"/v1/identities/cy/faces/{face}/reject", headers=H).status_code == 404  # not cy's any more

    api.recluster()  # the freed face is clustered again, and naming it cy again needs proceed
    found = next(c for c in api.get("/v1/clusters", params={"min_size": 1}, headers=R).json()["clusters"]
                 if face in api.get(f"/v1/clusters/{c['cluster']}", headers=R).json()["face_ids"])
    again = api.post(f"/v1/clusters/{found['cluster']}/promote", json={"identity": "cy", "face_ids": [face]},
                     headers=H)
    assert again.status_code == 409 and "rejected from 'cy'" in again.text
    forced = api.post(f"/v1/clusters/{found['cluster']}/promote",
                      json={"identity": "cy", "face_ids": [face], "proceed": True}, headers=H)
    assert forced.status_code == 200 and forced.json()["face_ids"] == [face]

    ann = api.get("/v1/identities/ann", headers=R).json()["faces"][0]["face_id"]
    assert api.post(f"/v1/identities/ann/faces/{ann}/reject", headers=H).status_code == 200
    files = [("images", ("a.png", png(1), "image/png"))]
    refused = api.post("/v1/identities/ann/faces", files=files, headers=H)
    assert refused.status_code == 409 and "a.png: this face was rejected from 'ann'" in refused.text

    api.recluster()  # named someone else since: enrolling the photo as ann still needs proceed, and takes it then
    holder = next(c for c in api.get("/v1/clusters", params={"min_size": 1}, headers=R).json()["clusters"]
                  if ann in api.get(f"/v1/clusters/{c['cluster']}", headers=R).json()["face_ids"])
    named = api.post(f"/v1/clusters/{holder['cluster']}/promote",
                     json={"identity": "dee", "face_ids": [ann], "proceed": True}, headers=H)
    assert named.status_code == 200 and named.json()["face_ids"] == [ann]
    refused = api.post("/v1/identities/ann/faces", files=files, headers=H)
    assert refused.status_code == 409 and "rejected from 'ann'" in refused.text
    assert [f["face_id"] for f in api.get("/v1/identities/dee", headers=R).json()["faces"]] == [ann]
    assert api.post(f"/v1/identities/dee/faces/{ann}/reject", headers=H).json()["rejected_from"] == ["ann", "dee"]
    assert api.post("/v1/identities/ann/faces", files=files, data={"proceed": "true"}, headers=H).status_code == 201
    row = api.index.rows([int(ann)])[int(ann)]
    assert row.identity == "ann" and row.metadata["rejected_from"] == ["dee"]  # told to proceed for ann only


def test_enrolling_a_face_that_matches_someone_else_is_a_conflict(api):
    files = [("images", ("a.png", png(1, 3), "image/png"))]  # another photo of ann
    conflict = api.post("/v1/identities/anne/faces", files=files, headers=H)
    assert conflict.status_code == 409 and "'ann'" in conflict.json()["detail"]
    other = [("images", ("b.png", png(2), "image/png"))]  # someone else's face is no conflict
    assert api.post("/v1/identities/bea/faces", files=other, headers=H).status_code == 201
    assert api.get("/v1/identities/anne", headers=R).status_code == 404  # nothing written
    assert api.post("/v1/identities/anne/faces", files=files, data={"proceed": "true"}, headers=H).status_code == 201
    own = [("images", ("a.png", png(1), "image/png"))]
    assert api.post("/v1/identities/ann/faces", files=own, headers=H).status_code == 201  # its own: fine
