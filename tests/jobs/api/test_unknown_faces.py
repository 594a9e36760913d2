"""Keeping the faces a search answered "unknown" (ARCMATCH_KEEP_UNKNOWN_FACES): off by default, kept unlabelled
once per photo, never an answer, and deleted after their retention (on Milvus Lite)."""

import time

import httpx
import pytest

from indexer.archive import FaceArchive
from indexer.store import FaceIndex, connect
from jobs.api.app import create_app
from jobs.service import IdentityService
from jobs.settings import Settings
from tests.helpers import WRITE_ENTRY as ENTRY
from tests.helpers import W as H
from tests.helpers import live_app, png


def unlabelled(settings) -> list[dict]:
    client = connect(settings.milvus_uri)
    index = FaceIndex(client, IdentityService.open(settings).index.collection)
    rows = index.rows([face for face, _ in index.unlabelled_faces()])
    client.close()
    return [{"id": r.face_id, "source": r.source, "metadata": r.metadata} for r in rows.values()]


@pytest.mark.stores("lite")
@pytest.mark.parametrize("keep", [False, True])
def test_unknown_faces_are_kept_only_when_enabled(milvus_uri, collection_name, tiny_model_dir, tmp_path, keep):
    settings = Settings(model=tiny_model_dir, api_keys=ENTRY, milvus_uri=milvus_uri, gallery=collection_name,
                        archive_uri=str(tmp_path / "archive"), keep_unknown_faces=keep, unknown_retention_days=1)
    with live_app(create_app(settings)) as base, httpx.Client(base_url=base, timeout=60) as api:
        assert api.post("/v1/identities/ann/faces", files=[("images", ("a.png", png(1), "image/png"))],
                        headers=H).status_code == 201

        def search(data):
            found = api.post("/v1/search", files={"image": ("p.png", data, "image/png")}, data={"threshold": "0.99"},
                             headers=H)
            assert found.status_code == 200
            return found.json()["faces"][0]

        assert search(png(1))["identity"] == "ann"  # known: nothing kept
        stranger = search(png(7))
        assert stranger["identity"] is None
        search(png(7))  # the same photo again: the same face, once
        again = search(png(7, 1))  # another photo of the stranger: the kept faces are never the answer
        assert again["identity"] is None and {c["identity"] for c in again["candidates"]} == {"ann"}
    if not keep:
        assert Settings.model_fields["keep_unknown_faces"].default is False
        return
    kept = unlabelled(settings)
    assert len(kept) == 2 and all(r["source"].startswith("search:") for r in kept)
    assert all(r["metadata"]["expires_at"] - r["metadata"]["kept_at"] == 86400 for r in kept)
    assert all(r["metadata"]["below"] == 0.99 for r in kept)  # the threshold the search answered unknown under
    archive = FaceArchive(str(tmp_path / "archive"), collection_name)
    assert {r["id"] for r in kept} <= set(archive.live_versions())

    service = IdentityService.open(settings)
    assert service.purge_expired(now=time.time()) == 0  # a day to go
    assert service.purge_expired(now=time.time() + 2 * 86400) == 2
    service.close()
    assert unlabelled(settings) == [] and not {r["id"] for r in kept} & set(archive.live_versions())


@pytest.mark.stores("lite")
def test_a_photo_searched_again_keeps_what_a_person_said_of_its_faces(milvus_uri, collection_name, tiny_model_dir,
                                                                      tmp_path):
    """Confirmed a stranger through the API, a kept face stays confirmed when its photo is searched again (a retry,
    a client sending it twice), with the higher of the two thresholds it was answered under; the archive holds the
    mark too, for a re-embed to carry. A face named since is never made unlabelled again."""
    settings = Settings(model=tiny_model_dir, api_keys=ENTRY, milvus_uri=milvus_uri, gallery=collection_name,
                        archive_uri=str(tmp_path / "archive"), keep_unknown_faces=True)
    with live_app(create_app(settings)) as base, httpx.Client(base_url=base, timeout=60) as api:
        assert api.post("/v1/identities/ann/faces", files=[("images", ("a.png", png(1), "image/png"))],
                        headers=H).status_code == 201

        def search(data, threshold):
            found = api.post("/v1/search", files={"image": ("p.png", data, "image/png")},
                             data={"threshold": threshold}, headers=H)
            assert found.status_code == 200 and found.json()["faces"][0]["identity"] is None

        search(png(7), "0.99")
        search(png(8), "0.99")
        confirmed = api.post("/v1/gallery/strangers/kept", headers=H).json()["face_ids"]
        assert len(confirmed) == 2
        named = api.post("/v1/identities/bob/name", json={"face_ids": [confirmed[1]], "proceed": True}, headers=H)
        assert named.status_code == 200, named.text
        search(png(7), "0.995")
        search(png(7), "0.98")
        assert api.post("/v1/search", files={"image": ("p.png", png(8), "image/png")}, data={"threshold": "1"},
                        headers=H).status_code == 200  # bob's own photo, at a threshold it may miss by a rounding
        assert api.get("/v1/identities/bob", headers=H).json()["faces"][0]["face_id"] == confirmed[1]
    kept = {r["id"]: r["metadata"] for r in unlabelled(settings)}
    [(face, metadata)] = kept.items()
    assert metadata["stranger"] is True and metadata["below"] == 0.995
    assert metadata["below_model"] == IdentityService.open(settings).embedder.spec.version
    [entry] = FaceArchive(str(tmp_path / "archive"), collection_name).entries({face})
    assert '"stranger": true' in entry.metadata
