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


def settings(model, milvus_uri, gallery, archive) -> Settings:
    return Settings(model=model, milvus_uri=milvus_uri, collection=gallery, archive_uri=str(archive),
                    _env_file=None)


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
