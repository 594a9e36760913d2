"""A gallery behind an alias (indexer/galleries.py), on Milvus Lite and on the server: one collection per model,
the alias moved in one call and back, and a gallery served by another model refused rather than served empty."""

from __future__ import annotations

import numpy as np
import pytest

from indexer.errors import CollectionNotFound, InvalidValue, ModelMismatch
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
    assert galleries.rollback() == a.collection
    assert FaceIndex(galleries.client, gallery).info().model_version == "model-a/1"
    galleries.drop(b.collection)
    assert [c.name for c in galleries.collections()] == [a.collection]


def test_a_plain_collection_from_before_aliases_is_adopted(galleries):
    plain = FaceIndex(galleries.client, galleries.gallery)
    plain.ensure(A, index_type="FLAT")
    plain.upsert([FaceRow("s", "ann", unit(1, 0, 0, 0), 1)])
    assert galleries.open(A, create=False).collection == galleries.gallery  # served as it is
    name = galleries.adopt()
    assert name == collection_name(galleries.gallery, A.model_version) and galleries.target() == name
    assert FaceIndex(galleries.client, galleries.gallery).count() == 1
