"""Graph clustering on arrays: the methods on identity-clustered vectors, chaining, stable ids, the metrics."""

import numpy as np
import pytest

from indexer.clustering import (
    METHODS,
    Graph,
    bcubed,
    chinese_whispers,
    cluster_graph,
    pairwise,
    stable_ids,
    summarize,
)
from indexer.errors import InvalidValue
from tests.helpers import people


def knn_graph(vectors: np.ndarray, k: int, threshold: float) -> Graph:
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -1)
    nearest = np.argsort(-sims, axis=1)[:, :k]
    src = np.repeat(np.arange(len(vectors)), k)
    return Graph.from_edges(len(vectors), src, nearest.ravel(), sims[src, nearest.ravel()], threshold)


def test_the_graph_keeps_each_pair_once_per_direction_above_the_threshold():
    g = Graph.from_edges(4, [0, 1, 1, 2, 3], [1, 0, 2, 1, 3], [0.9, 0.8, 0.4, 0.7, 1.0], threshold=0.5)
    assert g.edges == 2  # (0,1) at its larger weight, (1,2) from 2->1; 1->2 at 0.4 is under; 3->3 is a self-loop
    assert sorted(zip(g.src.tolist(), g.dst.tolist(), [round(float(w), 2) for w in g.weight], strict=True)) == [
        (0, 1, 0.9), (1, 0, 0.9), (1, 2, 0.7), (2, 1, 0.7)]


@pytest.mark.parametrize("method", METHODS)
def test_every_method_finds_well_separated_people(method):
    rows = people(40, 5, spread=0.4, dim=64)
    truth = [r.identity for r in rows]
    labels = cluster_graph(knn_graph(np.stack([r.vector for r in rows]), k=8, threshold=0.6), method)
    precision, recall, f = bcubed(truth, labels)
    assert precision > 0.97 and recall > 0.97, (precision, recall)


def test_one_bad_edge_chains_connected_components_but_not_chinese_whispers():
    a, b = np.arange(10), np.arange(10, 20)
    clique = [(i, j) for group in (a, b) for i in group for j in group if i != j]
    src, dst = zip(*(clique + [(0, 10), (10, 0)]), strict=True)
    g = Graph.from_edges(20, src, dst, np.full(len(src), 0.8), threshold=0.5)
    assert len(set(cluster_graph(g, "connected").tolist())) == 1
    assert len(set(chinese_whispers(g).tolist())) == 2
    assert len(set(cluster_graph(g, "leiden").tolist())) == 2


def test_chinese_whispers_started_from_its_answer_keeps_it():
    rows = people(20, 4, spread=0.3, dim=64)
    g = knn_graph(np.stack([r.vector for r in rows]), k=6, threshold=0.6)
    first = chinese_whispers(g, seed=1)
    assert (chinese_whispers(g, seed=2, init=first) == first).all()
    with pytest.raises(InvalidValue, match="labels"):
        chinese_whispers(g, init=first[:3])


def test_stable_ids_keep_unchanged_and_grown_clusters_and_number_new_ones_after_the_last():
    previous = np.array([7, 7, 7, 3, 3, 9, -1, -1, -1])
    labels = np.array([0, 0, 0, 1, 1, 1, 2, 2, 5])  # 7 same; 3 grew by a face of 9; 9 is gone; two new clusters
    ids = stable_ids(labels, previous, next_id=10)
    assert ids[:3].tolist() == [7, 7, 7] and ids[3:6].tolist() == [3, 3, 3]
    assert ids[6:8].tolist() == [10, 10] and ids[8] == 11  # the larger new cluster first


def test_summaries_name_size_cohesion_and_the_most_central_face():
    g = Graph.from_edges(4, [0, 0, 1, 3], [1, 2, 2, 3], [0.9, 0.8, 0.6, 1.0], threshold=0.5)
    [big, single] = summarize(g, np.array([5, 5, 5, 8]))
    assert (big.cluster, big.size, big.representative) == (5, 3, 0)  # face 0: 0.9 + 0.8
    assert big.cohesion == pytest.approx((0.9 + 0.8 + 0.6) / 3, abs=1e-4)
    assert (single.cluster, single.size, single.cohesion, single.representative) == (8, 1, 1.0, 3)


def test_bcubed_and_pairwise_against_hand_counts():
    truth, predicted = ["a", "a", "a", "b", "b"], [1, 1, 2, 2, 2]
    precision, recall, _ = bcubed(truth, predicted)
    assert precision == pytest.approx((1 + 1 + 1 / 3 + 2 / 3 + 2 / 3) / 5)
    assert recall == pytest.approx((2 / 3 + 2 / 3 + 1 / 3 + 1 + 1) / 5)
    p, r, f = pairwise(truth, predicted)
    assert (p, r) == pytest.approx((2 / 4, 2 / 4)) and f == pytest.approx(0.5)
    assert bcubed(truth, truth) == (1.0, 1.0, 1.0)
