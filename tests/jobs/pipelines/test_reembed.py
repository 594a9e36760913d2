"""A model upgrade (jobs/pipelines/reembed.py) on real Milvus and a real local Ray: API enrollments survive it,
deletes stay deleted, the old model's processes keep searching and stop writing, and rollback is one call."""

from __future__ import annotations

import pytest

from common.errors import Conflict
from embedder.errors import ModelError
from indexer.archive import FaceArchive
from indexer.errors import GalleryMoved
from indexer.galleries import Galleries
from indexer.store import connect
from jobs.pipelines.reembed import MissingFromArchive, reembed
from jobs.service import IdentityService
from jobs.settings import Settings
from tests.helpers import png


def settings(model, milvus_uri, gallery, archive, **extra) -> Settings:
    return Settings(model=model, milvus_uri=milvus_uri, collection=gallery, archive_uri=str(archive),
                    _env_file=None, **extra)


def best(service: IdentityService, photo: bytes):
    return service.identify([photo], select="largest")[0][0].decision


@pytest.mark.slow
def test_api_enrollments_survive_an_upgrade_and_deletes_stay_deleted(ray_local, milvus_uri, collection_name,
                                                                     tiny_model_dir, other_model_dir, tmp_path):
    archive = tmp_path / "archive"
    old = IdentityService.open(settings(tiny_model_dir, milvus_uri, collection_name, archive), create=True)
    ann = old.enroll("ann", [("a1.png", png(1)), ("a2.png", png(1, 1))]).face_ids
    old.enroll("bob", [("b.png", png(2))])
    old.enroll("eve", [("e.png", png(3))])
    old.delete_face("ann", ann[1])
    old.delete_identity("eve")
    expected = {f: i for f, i in ((ann[0], "ann"),)} | {old.identity("bob")[0]["id"]: "bob"}

    dry = reembed(str(other_model_dir), milvus=milvus_uri, gallery=collection_name, archive=str(archive),
                  dry_run=True)
    assert (dry.in_source, dry.to_embed, dry.not_archived, dry.switched) == (2, 2, 0, False)

    summary = reembed(str(other_model_dir), milvus=milvus_uri, gallery=collection_name, archive=str(archive),
                      grace_s=0, index_type="FLAT")
    assert summary.switched and summary.in_target == 2 and summary.threshold == 0.6 and not summary.skipped

    new = IdentityService.open(settings(other_model_dir, milvus_uri, collection_name, archive))
    assert new.index.collection == summary.target and new.ready()["in_service"]
    assert {r["id"]: r["identity"] for r in new.index.faces_of("ann") + new.index.faces_of("bob")} == expected
    assert best(new, png(1)).identity == "ann" and best(new, png(2)).identity == "bob"
    assert new.index.faces_of("eve") == [] and new.threshold() == 0.6  # the new model's calibration travelled

    # the old model's process: still answers from its own collection, takes no writes
    old._ready_checked = -10.0
    assert not old.ready()["in_service"] and best(old, png(1)).identity == "ann"
    with pytest.raises(GalleryMoved):
        old.enroll("zed", [("z.png", png(4))])
    with pytest.raises(Conflict, match="already served"):
        reembed(str(other_model_dir), milvus=milvus_uri, gallery=collection_name, archive=str(archive))

    galleries = Galleries(connect(milvus_uri), collection_name)
    assert galleries.rollback() == summary.source  # one call back; the old model is in service again
    old._ready_checked = -10.0
    assert old.ready()["in_service"]
    for service in (old, new):
        service.close()


def test_faces_never_archived_block_the_switch_and_a_model_needs_a_threshold(milvus_uri, collection_name,
                                                                           tiny_model_dir, other_model_dir,
                                                                           tmp_path):
    old = IdentityService.open(settings(tiny_model_dir, milvus_uri, collection_name, tmp_path / "a"), create=True)
    old.archive = None  # as a gallery enrolled before the archive existed
    old.enroll("ann", [("a.png", png(1))])
    old.close()
    with pytest.raises(MissingFromArchive, match="never archived"):
        reembed(str(other_model_dir), milvus=milvus_uri, gallery=collection_name, archive=str(tmp_path / "a"))
    assert FaceArchive(str(tmp_path / "a"), collection_name).stats().live == 0

    (tiny := tmp_path / "uncalibrated").mkdir()
    for item in other_model_dir.iterdir():
        if "calibration" not in item.name:
            (tiny / item.name).write_bytes(item.read_bytes())
    with pytest.raises(ModelError, match="threshold"):
        reembed(str(tiny), milvus=milvus_uri, gallery=collection_name, archive=str(tmp_path / "a"))


@pytest.mark.slow
def test_searches_never_fail_and_writes_during_the_job_are_neither_lost_nor_resurrected(
        ray_local, milvus_uri, collection_name, tiny_model_dir, other_model_dir, tmp_path):
    import threading

    import httpx

    from jobs.api.app import create_app
    from jobs.api.keys import new_key
    from tests.helpers import live_app

    key, entry = new_key("ops", ["read", "write"])
    archive = tmp_path / "archive"
    old_settings = settings(tiny_model_dir, milvus_uri, collection_name, archive, api_keys=entry,
                            audit_dir=tmp_path / "audit")
    with live_app(create_app(old_settings)) as base, httpx.Client(base_url=base, timeout=60,
                                                                  headers={"X-API-Key": key}) as api:
        for n in range(30):
            answer = api.post(f"/v1/identities/p{n}/faces", files=[("images", ("a.png", png(100 + n)))])
            assert answer.status_code == 201
        stop, searches, failures = threading.Event(), [0], []

        def search() -> None:
            with httpx.Client(base_url=base, timeout=60, headers={"X-API-Key": key}) as client:
                while not stop.is_set():
                    answer = client.post("/v1/search", files={"image": ("p.png", png(100))})
                    searches[0] += 1
                    if answer.status_code != 200:
                        failures.append(answer.status_code)

        acknowledged, deleted, refused = set(), set(), []

        def write() -> None:  # enrollments and deletes while the job runs, until the old model refuses them
            with httpx.Client(base_url=base, timeout=60, headers={"X-API-Key": key}) as client:
                for n in range(200):
                    if stop.is_set():
                        return
                    answer = client.post(f"/v1/identities/w{n}/faces", files=[("images", ("w.png", png(500 + n)))])
                    if answer.status_code == 503:
                        refused.append(n)
                        return
                    acknowledged.add(int(answer.json()["face_ids"][0]))
                    if n % 3 == 0:
                        assert client.delete(f"/v1/identities/p{n % 30}").status_code in (200, 404)
                        deleted.add(f"p{n % 30}")

        threads = [threading.Thread(target=search), threading.Thread(target=write)]
        for thread in threads:
            thread.start()
        summary = reembed(str(other_model_dir), milvus=milvus_uri, gallery=collection_name, archive=str(archive),
                          grace_s=3, index_type="FLAT")
        stop.set()
        for thread in threads:
            thread.join(timeout=120)
    assert searches[0] > 10 and failures == []  # every search answered, through the job and the switch
    new = IdentityService.open(settings(other_model_dir, milvus_uri, collection_name, archive))
    in_new = {int(r["id"]): r["identity"] for name in [f"p{n}" for n in range(30)] + [f"w{n}" for n in range(200)]
              for r in new.index.faces_of(name)}
    assert acknowledged <= set(in_new)  # no acknowledged enrollment lost
    assert not {name for name in in_new.values()} & deleted  # no deleted person came back
    assert len(in_new) == 30 - len(deleted) + len(acknowledged) == summary.in_target
    new.close()
