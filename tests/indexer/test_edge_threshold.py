"""The edge threshold read from k-NN scores: ranked rows from hits, a threshold between strangers and the same
person that clusters well, and no answer where the scores cannot give one."""

import numpy as np
import pytest

from indexer.clustering import Graph, bcubed, cluster_graph
from indexer.edge_threshold import MIN_FACES, fit_neighbours, ranked_scores
from tests.helpers import people


def hits(vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each face's k + 1 best hits, itself included, as a vector store's search returns them."""
    sims = vectors @ vectors.T
    nearest = np.argsort(-sims, axis=1)[:, : k + 1]
    src = np.repeat(np.arange(len(vectors)), k + 1)
    return src, nearest.ravel(), sims[src, nearest.ravel()]


def crowd(seed: int = 0) -> list:
    """Mostly people with one photo, some with a few, three with many: the shape of a wild gallery."""
    rng = np.random.default_rng(seed)
    sizes = np.concatenate([np.ones(300, int), rng.integers(2, 8, 150), [30, 40, 60]])
    return [row for i, size in enumerate(sizes) for row in people(1, int(size), spread=0.8, dim=64, seed=i, first=i)]


def test_ranked_scores_drop_self_hits_and_sort_each_face_highest_first():
    out = ranked_scores(3, [0, 0, 0, 1, 1, 2], [0, 2, 1, 1, 0, 2], [1.0, 0.3, 0.5, 1.0, 0.5, 1.0], k=2)
    assert out[0].tolist() == [0.5, 0.3]
    assert out[1, 0] == 0.5 and np.isnan(out[1, 1])  # one neighbour only
    assert np.isnan(out[2]).all()


def test_the_threshold_lies_between_strangers_and_the_same_person_and_clusters_near_the_best():
    rows = crowd()
    vectors, truth = np.stack([r.vector for r in rows]), np.array([r.identity for r in rows])
    src, dst, weight = hits(vectors, k=20)
    fit = fit_neighbours(ranked_scores(len(rows), src, dst, weight, k=20))
    assert fit is not None and fit.stranger_mode < fit.threshold < fit.same_mean
    assert fit.same_share[0] > 0.5 > fit.same_share[-1]  # the first neighbour is usually the same person

    def f_at(threshold: float, method: str) -> float:
        return bcubed(truth, cluster_graph(Graph.from_edges(len(rows), src, dst, weight, threshold), method))[2]

    for method in ("leiden", "chinese-whispers"):
        best = max(f_at(t, method) for t in np.arange(0.35, 0.80, 0.05))
        assert f_at(fit.threshold, method) > best - 0.03, method


def test_a_clean_gap_is_cut_where_the_strangers_end():
    rows = people(30, 4, spread=0.4, dim=64)
    vectors, truth = np.stack([r.vector for r in rows]), [r.identity for r in rows]
    src, dst, weight = hits(vectors, k=8)
    fit = fit_neighbours(ranked_scores(len(rows), src, dst, weight, k=8))
    same = np.array(truth)[dst] == np.array(truth)[src]
    assert weight[~same].max() < fit.threshold < weight[same & (src != dst)].min()
    labels = cluster_graph(Graph.from_edges(len(rows), src, dst, weight, fit.threshold), "leiden")
    assert bcubed(truth, labels) == (1.0, 1.0, 1.0)


def test_no_threshold_from_too_few_faces_or_from_strangers_only():
    few = np.stack([r.vector for r in people(3, 3, spread=0.4, dim=64)])
    assert MIN_FACES > len(few)
    assert fit_neighbours(ranked_scores(len(few), *hits(few, k=4), k=4)) is None
    strangers = np.stack([r.vector for r in people(600, 1, spread=0.8, dim=64)])
    assert fit_neighbours(ranked_scores(len(strangers), *hits(strangers, k=20), k=20)) is None


def test_the_same_scores_give_the_same_threshold_and_a_sample_of_a_large_gallery_stays_close(monkeypatch):
    rows = crowd(seed=1)
    vectors = np.stack([r.vector for r in rows])
    scores = ranked_scores(len(rows), *hits(vectors, k=20), k=20)
    whole = fit_neighbours(scores)
    assert fit_neighbours(scores) == whole
    monkeypatch.setattr("indexer.edge_threshold.SAMPLE_FACES", 600)
    sampled = fit_neighbours(scores)
    assert sampled.faces == 600 and sampled.threshold == pytest.approx(whole.threshold, abs=0.03)
