"""The face archive (indexer/archive.py) on a local directory and on Arrow's in-memory filesystem: latest entry wins,
tombstones of faces and identities hide what they name and nothing else, compaction removes the bytes."""

from __future__ import annotations

import itertools
import json

import pytest

from indexer.archive import ArchivedFace, FaceArchive
from indexer.errors import InvalidValue

_n = itertools.count()


@pytest.fixture(params=["directory", "uri"])
def archive(request, tmp_path):
    root = str(tmp_path / "archive") if request.param == "directory" else f"mock:///archive-{next(_n)}"
    return FaceArchive(root, "faces")


def face(n: int, identity: str = "ann", image: bytes = b"png") -> ArchivedFace:
    return ArchivedFace(n, identity, f"src/{n}.jpg", json.dumps({"n": n}), "aligned", image + bytes([n % 256]))


def test_writes_read_back_once_each_with_the_latest_version(archive):
    archive.write([face(1), face(2, "bob")])
    archive.write([face(1, image=b"newer")])  # a retry, or the same face enrolled again
    archive.write([face(2, "bob")])
    got = {f.face_id: f for f in archive.entries()}
    assert sorted(got) == [1, 2] and got[1].image == b"newer\x01" and got[2].identity == "bob"
    assert got[1].metadata == '{"n": 1}' and got[1].kind == "aligned" and got[1].source == "src/1.jpg"
    assert [f.face_id for f in archive.entries({2})] == [2]
    stats = archive.stats()
    assert (stats.live, stats.dead, stats.parts) == (2, 2, 3)


def test_tombstones_hide_faces_and_identities_written_before_them_only(archive):
    archive.write([face(1), face(2), face(3, "bob")])
    archive.forget(face_ids=[3], identity=None)
    archive.forget(identity="ann")
    assert sorted(archive.live_versions()) == []
    archive.write([face(2)])  # enrolled again after the delete: alive
    assert sorted(archive.live_versions()) == [2]


def test_a_face_tombstone_names_its_identity_so_it_cannot_hide_another_persons_face(archive):
    archive.write([face(1, "ann"), face(2, "bob")])
    archive.forget(face_ids=[2], identity="ann")  # "delete ann's face 2": face 2 is bob's
    assert sorted(archive.live_versions()) == [1, 2]
    archive.forget(face_ids=[2], identity="bob")
    assert sorted(archive.live_versions()) == [1]


def test_compaction_removes_dead_bytes_and_keeps_every_live_face(archive):
    archive.write([face(n) for n in range(10)])
    archive.write([face(n, "bob", image=b"v2") for n in range(5)])
    archive.forget(identity="ann")
    archive.write([face(20, "ann")])
    before = {f.face_id: f.image for f in archive.entries()}
    deleted = archive.deleted_ids()
    assert sorted(deleted) == [5, 6, 7, 8, 9]  # ann's; 0-4 were bob's since, 20 came after the tombstone
    stats = archive.compact(part_rows=4)
    after = {f.face_id: f.image for f in archive.entries()}
    assert after == before and sorted(after) == [0, 1, 2, 3, 4, 20]
    # the deleted faces' bytes and name are gone; that they were deleted, and when, is not (ingestion asks)
    assert (stats.live, stats.dead, stats.tombstones, stats.parts) == (6, 0, 1, 2)
    assert archive.deleted_ids() == deleted and "ann" not in str(archive._tombstones())
    archive.write([face(5, "ann")])  # enrolled again after the compaction: alive, no longer deleted
    assert 5 in archive.live_versions() and 5 not in archive.deleted_ids()
    archive.forget(identity="ann")  # the tombstone from before compaction is gone; a new one still works
    assert sorted(archive.live_versions()) == [0, 1, 2, 3, 4]
    assert sorted(archive.deleted_ids()) == [5, 6, 7, 8, 9, 20]


def test_galleries_are_apart_and_a_bad_location_is_a_clear_error(tmp_path):
    FaceArchive(str(tmp_path), "a").write([face(1)])
    assert list(FaceArchive(str(tmp_path), "b").entries()) == []
    with pytest.raises(InvalidValue, match="not a location"):
        FaceArchive("nosuchscheme://x", "faces")


def test_one_face_image_is_read_back_and_a_deleted_one_is_not(tmp_path):
    import time as clock

    from indexer.archive import LOCATIONS_TTL_S

    archive = FaceArchive(str(tmp_path), "g")
    archive.write([ArchivedFace(i, "ann" if i % 2 else "bob", f"s{i}", "{}", "aligned", bytes([i]) * 10)
                   for i in range(100)])
    archive.write([ArchivedFace(7, "ann", "s7", "{}", "photo", b"newer")])
    assert archive.image(3) == ("aligned", bytes([3]) * 10)
    assert archive.image(7) == ("photo", b"newer")  # the latest entry
    assert archive.image(1000) is None
    archive.forget(identity="bob")
    clock.sleep(LOCATIONS_TTL_S)
    assert archive.image(4) is None and archive.image(5) == ("aligned", bytes([5]) * 10)


def test_a_few_entries_are_read_from_their_parts_alone(tmp_path):
    archive = FaceArchive(str(tmp_path), "g")
    for n in range(3):
        archive.write([ArchivedFace(i + 10 * n, "ann", f"s{i}", "{}", "photo", b"x") for i in range(10)])
    archive.write([ArchivedFace(3, "bob", "s3", '{"v": 2}', "photo", b"y")])
    archive.forget(identity="ann", face_ids=[14])
    few = {e.face_id: e for e in archive.entries({3, 14, 21, 999})}
    assert set(few) == {3, 21} and few[3].identity == "bob" and few[3].image == b"y"
    assert {e.face_id for e in archive.entries({3, 14, 21, 999})} == {
        e.face_id for e in archive.entries() if e.face_id in {3, 14, 21, 999}}
