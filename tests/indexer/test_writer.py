"""The gallery's one writer (indexer/writer.py) on Milvus Lite: the fence, "not this person", archive before vector
with nothing archived that the store refuses, and tombstones before deletes."""

from __future__ import annotations

import numpy as np
import pytest

from indexer.archive import FaceArchive
from indexer.errors import GalleryMoved, InvalidValue
from indexer.galleries import Galleries
from indexer.ids import UNLABELLED
from indexer.store import CollectionInfo, FaceRow, connect
from indexer.writer import FaceImage, GalleryWriter

A, B = CollectionInfo("model-a/1", 4, 0.5), CollectionInfo("model-b/2", 4, 0.6)
V = np.array([1, 0, 0, 0], np.float32)


def face(n: int, identity: str = "ann", **metadata) -> tuple[FaceRow, dict[int, FaceImage]]:
    return FaceRow(f"p{n}.png", identity, V, n, metadata), {n: FaceImage("photo", b"img%d" % n)}


@pytest.fixture
def gallery(tmp_path):
    client = connect(str(tmp_path / "w.db"))
    galleries = Galleries(client, "faces")
    index = galleries.open(A, create=True, index_type="FLAT")
    yield GalleryWriter(index, FaceArchive(str(tmp_path / "archive"), "faces"), galleries)
    client.close()


def test_archive_then_store_and_a_refused_row_is_neither(gallery):
    (one, kept_one), (two, kept_two) = face(1), face(2)
    assert gallery.write([one, two], kept_one | kept_two) == 2
    entries = {e.face_id: e for e in gallery.archive.entries()}
    assert set(entries) == {1, 2} and entries[1].identity == "ann" and entries[1].image == b"img1"

    bad, bad_kept = face(3, x=float("nan"))  # the store refuses metadata that is not JSON
    with pytest.raises(InvalidValue):
        gallery.write([bad], bad_kept)
    skipped = []
    good, good_kept = face(4)
    assert gallery.write([bad, good], bad_kept | good_kept, skipped=skipped) == 1
    assert [s[0] for s in skipped] == ["p3.png"] and "invalid row" in skipped[0][1]
    assert {e.face_id for e in gallery.archive.entries()} == {1, 2, 4}  # the refused row was never archived
    assert set(gallery.index.rows([1, 2, 3, 4])) == {1, 2, 4}


def test_rejections_are_found_and_carried(gallery):
    gallery.write([FaceRow("a.png", UNLABELLED, V, 1, {"rejected_from": ["ann", "cy"]})])
    [(row, rejected)] = gallery.check_rejections([FaceRow("a.png", "ann", V, 1, {"w": 1})])
    assert rejected and row.metadata == {"w": 1, "rejected_from": ["cy"]}  # its other rejections stay with it
    [(row, rejected)] = gallery.check_rejections([FaceRow("a.png", "bob", V, 1, {})])
    assert not rejected and row.metadata["rejected_from"] == ["ann", "cy"]


def test_a_rename_keeps_the_image_and_deletes_leave_tombstones(gallery):
    row, kept = face(1)
    gallery.write([row], kept)
    assert gallery.rename([FaceRow(row.source, "bob", V, 1, {"moved": True})]) == 1
    [entry] = gallery.archive.entries({1})
    assert entry.identity == "bob" and entry.image == b"img1" and '"moved": true' in entry.metadata
    assert gallery.delete_face("bob", 1)
    assert list(gallery.archive.entries({1})) == [] and gallery.index.rows([1]) == {}


def test_a_process_left_behind_by_a_switch_takes_no_writes(gallery):
    row, kept = face(1)
    gallery.write([row], kept)
    new = gallery.galleries.prepare(B, index_type="FLAT")
    gallery.galleries.switch(new.collection, lose=1)  # to an empty collection: face 1 stays in the old one
    gallery.refresh(max_age_s=0)
    with pytest.raises(GalleryMoved, match="served by another model"):
        gallery.write([face(2)[0]])
    with pytest.raises(GalleryMoved):
        gallery.delete_identity("ann")
    assert gallery.index.rows([1]) and {e.face_id for e in gallery.archive.entries()} == {1}  # nothing lost
    new_writer = GalleryWriter(new, gallery.archive, gallery.galleries)
    assert new_writer.write([FaceRow("b.png", "bob", V, 2, {})]) == 1  # the collection in service takes them


def test_a_face_written_again_as_it_is_is_known_archived_and_a_changed_one_is_not(gallery):
    (one, kept_one), (two, kept_two), (three, kept_three) = face(1, team="a"), face(2), face(3)
    gallery.write([one, two], kept_one | kept_two)
    gallery.index.flush()
    again = [one, FaceRow(two.source, "bob", V, 2, {}), three]  # 2 renamed, 3 new
    assert gallery.archived_as(again, kept_one | kept_two | kept_three) == {1}
    assert gallery.archived_as([one], {1: FaceImage("photo", b"another photo")}) == set()
    assert gallery.archived_as([FaceRow(one.source, "ann", V, 1, {"team": "b"})], kept_one) == set()
