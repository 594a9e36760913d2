"""`arcmatch cluster` against real Milvus (the server: Ray Data actors search, for the first test; Lite: the driver
does, for the rest): quality on identity-clustered vectors, named faces left alone, stable ids when faces arrive,
the export and the CLI."""

import pyarrow.parquet as pq
import pytest

from common.errors import NotFound
from indexer.cluster_store import ClusterStore
from indexer.clustering import bcubed
from indexer.ids import UNLABELLED
from indexer.store import FaceRow
from jobs.pipelines.cluster import cluster
from tests.helpers import people

DIM = 64


def unnamed(rows):
    return [FaceRow(r.source, UNLABELLED, r.vector, r.face_id) for r in rows]


@pytest.fixture
def gallery(new_collection):
    return new_collection(DIM, 0.6)


def write(index, rows):
    index.upsert(rows)
    index.flush()


@pytest.mark.stores("server")
def test_cluster_groups_unnamed_faces_and_keeps_ids_when_faces_arrive(ray_local, gallery, milvus_uri, tmp_path):
    crowd = people(30, 4, spread=0.4, dim=DIM)
    named = people(3, 2, spread=0.4, dim=DIM, seed=9, first=100)
    write(gallery, unnamed(crowd) + named)
    root = str(tmp_path / "store")
    first = cluster(milvus=milvus_uri, root=root, gallery=gallery.collection, k=8, export_parquet=tmp_path / "c.pq",
                    ray_from=0)  # on the server: Ray Data actors search, however few the faces
    assert first.faces == 120 and first.clusters == 30 and first.singletons == 0 and first.kept_ids == 0

    run = ClusterStore(root, gallery.collection, gallery.collection).latest()
    truth = {r.face_id: r.identity for r in crowd}
    assert sorted(run.face_ids.tolist()) == sorted(truth)  # the named faces are not clustered
    precision, recall, _ = bcubed([truth[f] for f in run.face_ids.tolist()], run.cluster_of)
    assert precision == 1.0 and recall == 1.0
    biggest = run.clusters[0]
    assert biggest.size == 4 and biggest.representative in run.members(biggest.cluster)
    exported = pq.read_table(tmp_path / "c.pq").to_pylist()
    assert len(exported) == 120 and {e["cluster_size"] for e in exported} == {4}

    # new faces: two of a person already clustered, and a new person of three
    more = people(30, 6, spread=0.4, dim=DIM)[4:6] + people(1, 3, spread=0.4, dim=DIM, seed=5, first=200)
    more = [FaceRow(r.source + "/new", UNLABELLED, r.vector, r.face_id + 1) for r in more]
    write(gallery, more)
    second = cluster(milvus=milvus_uri, root=root, gallery=gallery.collection, k=8, ray_from=0)
    after = ClusterStore(root, gallery.collection, gallery.collection).latest()
    assert second.faces == 125 and second.clusters == 31 and second.kept_ids == 30
    before = dict(zip(run.face_ids.tolist(), run.cluster_of.tolist(), strict=True))
    now = dict(zip(after.face_ids.tolist(), after.cluster_of.tolist(), strict=True))
    assert all(now[f] == c for f, c in before.items())  # every old face in the cluster it had
    person0 = before[crowd[0].face_id]
    assert now[more[0].face_id] == now[more[1].face_id] == person0
    assert now[more[2].face_id] == now[more[4].face_id] > max(before.values())


@pytest.mark.stores("lite")
def test_faces_kept_from_searches_past_their_retention_are_no_ones_cluster(gallery, milvus_uri, tmp_path):
    from dataclasses import replace

    rows = unnamed(people(3, 3, spread=0.2, dim=DIM))
    past = {"expires_at": 100, "kept_from": "search"}  # the service deletes them only now and then
    write(gallery, rows[:6] + [replace(r, metadata=past) for r in rows[6:]])
    summary = cluster(milvus=milvus_uri, root=str(tmp_path), gallery=gallery.collection, k=4, threshold=0.5)
    assert (summary.faces, summary.expired) == (6, 3)
    assert "(3 kept from searches past their retention left out)" in summary.lines()[0]


@pytest.mark.stores("lite")
def test_cluster_says_what_is_missing(gallery, milvus_uri, tmp_path):
    write(gallery, people(2, 2, spread=0.4, dim=DIM))
    with pytest.raises(NotFound, match="no unlabelled faces"):
        cluster(milvus=milvus_uri, root=str(tmp_path), gallery=gallery.collection)
    with pytest.raises(NotFound, match="does not exist"):
        cluster(milvus=milvus_uri, root=str(tmp_path), gallery="nobody_here")


@pytest.mark.stores("lite")
def test_edges_count_from_the_given_threshold_then_the_neighbours_then_the_calibration_then_the_model(
        gallery, milvus_uri, tmp_path):
    from indexer.calibration import GalleryCalibration, store

    write(gallery, unnamed(people(3, 3, spread=0.4, dim=DIM)))  # too few faces to read a threshold from
    first = cluster(milvus=milvus_uri, root=str(tmp_path), gallery=gallery.collection, k=4)
    assert (first.threshold, first.threshold_source) == (0.6, "model")
    store(gallery, GalleryCalibration(0.7, 0.01, 0.01, 0.1, 0.6, None, 10, 20, 20, 10, "model-a"))
    second = cluster(milvus=milvus_uri, root=str(tmp_path), gallery=gallery.collection, k=4)
    assert (second.threshold, second.threshold_source) == (0.7, "gallery")
    given = cluster(milvus=milvus_uri, root=str(tmp_path), gallery=gallery.collection, k=4, threshold=0.5)
    assert given.threshold_source == "given" and "the given's threshold" not in "\n".join(given.lines())

    write(gallery, unnamed(people(30, 4, spread=0.4, dim=DIM, seed=3, first=10)))
    enough = cluster(milvus=milvus_uri, root=str(tmp_path), gallery=gallery.collection, k=8)
    assert enough.threshold_source == "neighbours" and 0.3 < enough.threshold < 0.8
    assert "the gallery's own neighbour statistics" in enough.lines()[0]
    chaining = cluster(milvus=milvus_uri, root=str(tmp_path), gallery=gallery.collection, k=8, method="connected")
    assert chaining.threshold >= enough.threshold  # raised, or kept where it agrees best already: said which
    assert chaining.threshold_source == ("raised" if chaining.threshold > enough.threshold else "kept")
    assert "agree best with Chinese whispers'" in chaining.lines()[0] and chaining.agreement is not None


@pytest.mark.stores("lite")
def test_the_same_method_on_the_same_faces_gives_the_same_clusters_whatever_ran_before(gallery, milvus_uri, tmp_path):
    """The previous run lends its ids, never its grouping: Chinese whispers after connected components gives the
    clusters it gives from a fresh start."""
    crowd = people(12, 4, spread=0.7, dim=DIM)
    write(gallery, unnamed(crowd))

    def grouping(root: str, *methods: str) -> set[frozenset[int]]:
        for method in methods:
            cluster(milvus=milvus_uri, root=root, gallery=gallery.collection, k=8, threshold=0.2, method=method)
        run = ClusterStore(root, gallery.collection, gallery.collection).latest()
        return {frozenset(run.members(c.cluster).tolist()) for c in run.clusters}

    after_connected = grouping(str(tmp_path / "a"), "connected", "chinese-whispers")
    fresh = grouping(str(tmp_path / "b"), "chinese-whispers")
    assert after_connected == fresh and len(grouping(str(tmp_path / "c"), "connected")) < len(fresh)
