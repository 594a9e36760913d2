"""A gallery behind an alias (indexer/galleries.py), on Milvus Lite and on the server: one collection per model,
the alias moved in one call and back, and a gallery served by another model refused rather than served empty."""

from __future__ import annotations

import numpy as np
import pytest

from indexer.errors import CollectionNotFound, FacesAtStake, InvalidValue, ModelMismatch, NameTaken
from indexer.galleries import Galleries, collection_name
from indexer.store import CollectionInfo, FaceIndex, FaceRow, connect

A, B = CollectionInfo("model-a/1", 4, 0.5), CollectionInfo("model-b/2", 4, 0.6)


def unit(*values: float) -> np.ndarray:
    v = np.asarray(values, dtype=np.float32)
    return v / np.linalg.norm(v)


@pytest.fixture
def galleries(milvus_uri, collection_name):
    client = connect(milvus_uri)
    yield Galleries(client, collection_name)
    client.close()


def test_names_are_per_model_and_valid():
    assert collection_name("faces", "model-a/1").startswith("faces__model_a_1_")
    assert collection_name("faces", "x") != collection_name("faces", "y")
    with pytest.raises(InvalidValue, match="gallery name"):
        collection_name("bad name", "x")
    with pytest.raises(InvalidValue, match="gallery name"):
        collection_name("a__b", "x")


def test_a_new_gallery_whose_name_differs_from_one_only_in_case_is_refused(galleries):
    """"galB" beside "galb": one folder on macOS's and Windows's filesystems, one name to a person."""
    galleries.open(A, create=True)
    twin = Galleries(galleries.client, galleries.gallery.upper())
    with pytest.raises(NameTaken, match=f"differs from gallery {galleries.gallery!r} only in case"):
        twin.open(A, create=True)
    assert twin.serving() is None and not twin.collections()
    galleries.open(A, create=False)  # the gallery itself opens as before


def test_a_gallery_is_an_alias_that_moves_and_rolls_back(galleries):
    gallery = galleries.gallery
    with pytest.raises(CollectionNotFound):
        galleries.open(A, create=False)
    a = galleries.open(A, create=True, index_type="FLAT")
    a.upsert([FaceRow("s", "ann", unit(1, 0, 0, 0), 1)])
    assert galleries.target() == a.collection and FaceIndex(galleries.client, gallery).count() == 1
    with pytest.raises(ModelMismatch, match="reembed"):  # model B would serve an empty gallery
        galleries.open(B, create=True)

    b = galleries.prepare(B, index_type="FLAT")
    b.upsert([FaceRow("s", "ann", unit(0, 1, 0, 0), 1), FaceRow("t", "bob", unit(0, 0, 1, 0), 2)])
    assert galleries.open(B, create=False).collection == b.collection  # B's own, before the switch
    assert galleries.switch(b.collection) == a.collection
    through_alias = FaceIndex(galleries.client, gallery)
    assert through_alias.count() == 2 and through_alias.info().model_version == "model-b/2"
    assert galleries.open(A, create=False).collection == a.collection  # A's processes keep their own

    with pytest.raises(InvalidValue, match="switch the alias first"):
        galleries.drop(b.collection)
    summaries = {c.name: c for c in galleries.collections()}
    assert summaries[b.collection].serving and summaries[b.collection].previous == a.collection
    with pytest.raises(FacesAtStake, match=r"takes out of service, or (back )?to another name, 1 face\(s\) \(2; they "
                                           r"stay as they are in .*--lose 1"):
        galleries.rollback()  # bob was only ever in B
    assert galleries.rollback(lose=1) == a.collection
    assert FaceIndex(galleries.client, gallery).info().model_version == "model-a/1"
    with pytest.raises(FacesAtStake, match=r"dropping .* loses 1 face\(s\) \(2; neither"):
        galleries.drop(b.collection)
    with pytest.raises(FacesAtStake, match="--lose 1"):
        galleries.drop(b.collection, lose=2)  # the count told back must be the count
    galleries.drop(b.collection, archived={2})  # bob's photo is in the archive: a re-embed brings him back
    assert [c.name for c in galleries.collections()] == [a.collection]


def test_a_switch_that_would_take_faces_out_of_service_is_refused_unless_counted(galleries):
    a = galleries.open(A, create=True, index_type="FLAT")
    a.upsert([FaceRow("s", "ann", unit(1, 0, 0, 0), 1), FaceRow("t", "bob", unit(0, 0, 1, 0), 2)])
    b = galleries.prepare(B, index_type="FLAT")
    b.upsert([FaceRow("s", "ann", unit(0, 1, 0, 0), 1)])  # bob never made it into B
    with pytest.raises(FacesAtStake, match=r"to .* takes out of service, or (back )?to another name, 1 face\(s\) "
                                           r"\(2; they stay as they are in"):
        galleries.switch(b.collection)
    assert galleries.target() == a.collection  # nothing moved
    assert galleries.switch(b.collection, lose=1) == a.collection
    with pytest.raises(InvalidValue, match="no face: --lose 3 counts faces that are not at stake"):
        galleries.switch(a.collection, lose=3)  # a number nothing backs would go into the audit trail as lost
    assert galleries.switch(a.collection) == b.collection  # back: A holds everything B does


def test_a_plain_collection_from_before_aliases_is_adopted(galleries):
    plain = FaceIndex(galleries.client, galleries.gallery)
    plain.ensure(A, index_type="FLAT")
    plain.upsert([FaceRow("s", "ann", unit(1, 0, 0, 0), 1)])
    assert galleries.open(A, create=False).collection == galleries.gallery  # served as it is
    name = galleries.adopt()
    assert name == collection_name(galleries.gallery, A.model_version) and galleries.target() == name
    assert FaceIndex(galleries.client, galleries.gallery).count() == 1
