"""FaceIndex against real Milvus: a Milvus Lite file and the standalone server (each test runs on both)."""

import numpy as np
import pytest

from indexer.errors import CollectionNotFound, InvalidValue, ModelMismatch
from indexer.ids import face_id
from indexer.store import CollectionInfo, FaceIndex, FaceRow, connect

DIM = 8


def unit_rows(n, identities, seed=0):
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(n, DIM)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return [FaceRow(f"src/{i}", identities[i % len(identities)], v[i], face_id(f"src/{i}")) for i in range(n)]


@pytest.fixture
def client(milvus_uri):
    client = connect(milvus_uri)
    yield client
    client.close()


@pytest.fixture
def index(client, collection_name):
    idx = FaceIndex(client, collection_name)
    idx.ensure(CollectionInfo("model-a", DIM, 0.4, {"backbone": "x"}), index_type="HNSW")
    return idx


def test_upsert_twice_keeps_one_row_per_face(index):
    rows = unit_rows(30, ["ann", "bob", "cy"])
    index.upsert(rows)
    index.upsert(rows)
    index.flush()
    assert index.count() == 30
    assert sorted(index.iter_ids()) == sorted(r.face_id for r in rows)


def test_search_finds_the_face_itself_first(index):
    rows = unit_rows(30, ["ann", "bob", "cy"])
    index.upsert(rows)
    results = index.search(np.stack([rows[4].vector, rows[7].vector]), k=3)
    assert [r[0].face_id for r in results] == [rows[4].face_id, rows[7].face_id]
    assert results[0][0].identity == rows[4].identity
    assert results[0][0].score == pytest.approx(1.0, abs=1e-4)
    assert results[0][0].score >= results[0][1].score  # cosine similarity: higher is closer


def test_info_survives_reopening(milvus_uri, index):
    reopened = connect(milvus_uri)
    info = FaceIndex(reopened, index.collection).info()
    reopened.close()
    assert info == CollectionInfo("model-a", DIM, 0.4, {"backbone": "x"})


def test_other_model_is_refused(index):
    with pytest.raises(ModelMismatch, match="model-a"):
        FaceIndex(index.client, index.collection).ensure(CollectionInfo("model-b", DIM))
    with pytest.raises(ModelMismatch, match="dim"):
        index.search(np.ones((1, DIM + 1), np.float32))


def test_missing_collection_and_bad_vectors(client, index):
    with pytest.raises(CollectionNotFound):
        FaceIndex(client, "nothing_here").count()
    bad = FaceRow("s", "ann", np.full(DIM, np.nan, np.float32), 1)
    with pytest.raises(InvalidValue):
        index.upsert([bad])


@pytest.mark.parametrize("payload", ['" or 1==1 or "', 'ann" || identity != "', "\\", 'a\\" or "1"=="1'])
def test_filter_injection_matches_nothing_and_leaks_nothing(index, payload):
    index.upsert(unit_rows(12, ["ann", "bob"]))
    assert index.faces_of(payload) == []
    index.upsert([FaceRow("evil", payload, unit_rows(1, ["x"], seed=3)[0].vector, face_id("evil"))])
    found = index.faces_of(payload)
    assert [r["source"] for r in found] == ["evil"]
    assert len(index.faces_of("ann")) == 6


def test_search_ef_is_per_index_and_per_call(client, collection_name, index):
    rows = unit_rows(30, ["ann", "bob", "cy"])
    index.upsert(rows)
    wide = FaceIndex(client, collection_name, search_ef=512)
    assert wide.search_ef == 512
    for hits in (wide.search(rows[3].vector, k=5), index.search(rows[3].vector, k=5, ef=1)):  # ef is raised to k
        assert len(hits[0]) == 5 and hits[0][0].face_id == rows[3].face_id
    with pytest.raises(InvalidValue, match="search_ef"):
        FaceIndex(client, collection_name, search_ef=0)


def test_unlabelled_faces_are_never_an_identification_answer(index):
    from indexer.ids import UNLABELLED

    named = unit_rows(6, ["ann", "bob"])
    nobody = [FaceRow(f"u/{r.source}", UNLABELLED, r.vector, face_id(f"u/{r.source}")) for r in named]
    index.upsert(named + nobody)
    index.flush()
    probe = np.stack([named[0].vector])
    assert {h.identity for h in index.search(probe, k=12)[0]} == {"ann", "bob"}
    found = index.search(probe, k=12, among="unlabelled")[0]
    assert {h.identity for h in found} == {UNLABELLED} and found[0].face_id == nobody[0].face_id
    assert len(index.search(probe, k=12, among="all")[0]) == 12
    assert {h.identity for h in index.search(probe, k=12, exclude_identity="ann")[0]} == {"bob"}
    assert sorted(name for name, _ in index.list_identities()) == ["ann", "bob"]
    assert sorted(i for _, i in index.labelled_faces()) == sorted(r.identity for r in named)
    with pytest.raises(InvalidValue, match="among"):
        index.search(probe, among="everyone")
