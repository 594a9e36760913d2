"""Grouping faces nobody has named into candidate people, on a k-nearest-neighbour graph held in NumPy arrays.

Why a graph and not a distance matrix: at a million faces an all-pairs matrix is 4 TB; the k nearest neighbours of
each face, found in batches by the vector store, are 20 million edges (a few hundred MB), and every method here
works on those. An edge counts when its cosine similarity reaches a threshold, by default one read from the
graph's own scores (indexer/edge_threshold.py): the search's "same person" threshold chains people together here.

Methods (docs/BENCHMARKS.md compares them on LFW-gray):
- "connected": connected components, the baseline. One wrong edge between two people joins them, and at scale
  such edges always exist: it chains. With no threshold given, a run raises it to where its clusters agree with
  Chinese whispers' (indexer/method_threshold.py).
- "chinese-whispers" (Biemann 2006; dlib's face clustering): every face takes the label with the largest summed
  edge weight among its neighbours, in random order, until no label changes. One bad edge is outvoted by a
  face's other neighbours, so it does not chain. Run here in random blocks of faces (each block updated from the
  labels of the blocks before it), which keeps the asynchronous update of the method and runs as sparse-matrix
  operations instead of a Python loop per face. The default: at the edge threshold the run chooses it came within
  0.002 of its best BCubed F on LFW-gray, ORL and the demo's synthetic faces, and on a drawn 1M-face graph of
  people with ten photos each it found every person (docs/BENCHMARKS.md).
- "leiden" (Traag et al. 2019, through leidenalg): modularity on the weighted graph, with its guarantee of
  connected communities. It keeps the largest people (hundreds of photos) in one cluster where Chinese whispers
  may split them (0.004 more F on LFW-gray), but modularity cannot see communities much smaller than the square
  root of the graph's edges: with ten photos a person, a few stranger edges merge people (F 0.63 on the drawn 1M
  graph, 0.80 on the synthetic faces against 0.96, at the threshold Chinese whispers runs at; a run that chooses
  the threshold itself raises it for Leiden as for connected components, and reached 0.89 there).

A run's clusters depend on the graph, the method and its settings only, never on what an earlier run found
(starting Chinese whispers from a connected-components run's labels once left a 904-face cluster that a fresh
start splits into 27); `stable_ids` then gives each cluster the id of the previous run's cluster it overlaps
most, so clusters that did not change keep their ids.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from indexer.errors import InvalidValue

METHODS = ("chinese-whispers", "leiden", "connected")  # the first is the default (the module's docstring says why)


@dataclass(frozen=True)
class Graph:
    """An undirected weighted graph on nodes 0..n-1: each edge once per direction, the larger weight kept."""

    n: int
    src: np.ndarray  # int64
    dst: np.ndarray  # int64
    weight: np.ndarray  # float32 cosine similarity

    @classmethod
    def from_edges(cls, n: int, src, dst, weight, threshold: float) -> Graph:
        """Directed k-NN edges -> the undirected graph of those at or above `threshold`, without self-loops."""
        src, dst = np.asarray(src, np.int64), np.asarray(dst, np.int64)
        weight = np.asarray(weight, np.float32)
        keep = (weight >= threshold) & (src != dst)
        a, b, w = src[keep], dst[keep], weight[keep]
        lo, hi = np.minimum(a, b), np.maximum(a, b)
        key = lo * n + hi
        order = np.lexsort((-w, key))  # per pair, the largest weight first
        key, lo, hi, w = key[order], lo[order], hi[order], w[order]
        first = np.ones(len(key), bool)
        first[1:] = key[1:] != key[:-1]
        lo, hi, w = lo[first], hi[first], w[first]
        return cls(n, np.concatenate([lo, hi]), np.concatenate([hi, lo]), np.concatenate([w, w]))

    def above(self, threshold: float) -> Graph:
        """The same graph with only its edges at or above `threshold` (a stricter one than it was made with)."""
        keep = self.weight >= threshold
        return Graph(self.n, self.src[keep], self.dst[keep], self.weight[keep])

    def csr(self):
        from scipy.sparse import csr_matrix

        return csr_matrix((self.weight, (self.src, self.dst)), shape=(self.n, self.n))

    @property
    def edges(self) -> int:
        return len(self.src) // 2


def connected(graph: Graph) -> np.ndarray:
    from scipy.sparse.csgraph import connected_components

    return connected_components(graph.csr(), directed=False)[1].astype(np.int64)


def chinese_whispers(graph: Graph, *, iterations: int = 30, blocks: int = 16, seed: int = 0,
                     init: np.ndarray | None = None) -> np.ndarray:
    """Labels by Chinese whispers; `init` (one label per node, e.g. the previous run's) is where it starts from.
    A face keeps its label when that label ties with the best, so a settled graph stays settled."""
    from scipy.sparse import coo_matrix

    labels = np.arange(graph.n, dtype=np.int64) if init is None else np.array(init, dtype=np.int64)
    if len(labels) != graph.n:
        raise InvalidValue(f"init has {len(labels)} labels for {graph.n} faces")
    matrix, rng = graph.csr(), np.random.default_rng(seed)
    has_edges = np.diff(matrix.indptr) > 0
    active = np.nonzero(has_edges)[0]
    if not len(active):
        return labels
    # labels are compacted to 0..m-1 for the vote matrix's columns; the caller's label values come back at the end
    values, labels = np.unique(labels, return_inverse=True)
    for _ in range(iterations):
        changed = 0
        for block in np.array_split(rng.permutation(active), min(blocks, len(active))):
            rows = matrix[block].tocoo()
            votes = coo_matrix((rows.data, (rows.row, labels[rows.col])),
                               shape=(len(block), len(values))).tocsr()  # duplicates summed: weight per label
            best = np.asarray(votes.argmax(axis=1)).ravel()
            top = np.asarray(votes.max(axis=1).todense()).ravel()
            mine = np.asarray(votes[np.arange(len(block)), labels[block]]).ravel()
            move = (top > mine) & (best != labels[block])
            labels[block[move]] = best[move]
            changed += int(move.sum())
        if not changed:
            break
    return values[labels]


def leiden(graph: Graph, *, seed: int = 0, resolution: float = 1.0) -> np.ndarray:
    import igraph
    import leidenalg

    once = graph.src < graph.dst
    g = igraph.Graph(n=graph.n, edges=np.stack([graph.src[once], graph.dst[once]], axis=1), directed=False)
    weights = graph.weight[once].astype(float)
    partition = leidenalg.find_partition(g, leidenalg.RBConfigurationVertexPartition, weights=weights,
                                         resolution_parameter=resolution, seed=seed)
    return np.asarray(partition.membership, dtype=np.int64)


def cluster_graph(graph: Graph, method: str, *, seed: int = 0) -> np.ndarray:
    """One label per node by `method` (METHODS), from the graph alone: ids stay stable by stable_ids."""
    if method == "chinese-whispers":
        return chinese_whispers(graph, seed=seed)
    if method == "leiden":
        return leiden(graph, seed=seed)
    if method == "connected":
        return connected(graph)
    raise InvalidValue(f"clustering method must be one of {', '.join(METHODS)}, got {method!r}")


def stable_ids(labels: np.ndarray, previous: np.ndarray, next_id: int) -> np.ndarray:
    """Cluster ids for `labels`: each new cluster takes the previous id (previous[i], -1 for a face not seen
    before) it shares most faces with, largest overlaps first, each previous id used once; the others get new
    ids from `next_id` on, largest cluster first."""
    labels, previous = np.asarray(labels, np.int64), np.asarray(previous, np.int64)
    out = np.full(len(labels), -1, np.int64)
    _, compact = np.unique(labels, return_inverse=True)
    seen = previous >= 0
    pairs, counts = np.unique(np.stack([compact[seen], previous[seen]], axis=1), axis=0, return_counts=True)
    taken_new, taken_old, assigned = set(), set(), {}
    for (new, old), _ in sorted(zip(pairs.tolist(), counts.tolist(), strict=True), key=lambda p: -p[1]):
        if new not in taken_new and old not in taken_old:
            taken_new.add(new)
            taken_old.add(old)
            assigned[new] = old
    sizes = np.bincount(compact)
    for new in sorted(set(range(len(sizes))) - taken_new, key=lambda c: (-sizes[c], c)):
        assigned[new] = next_id
        next_id += 1
    lookup = np.array([assigned[c] for c in range(len(sizes))], dtype=np.int64)
    out[:] = lookup[compact]
    return out


@dataclass(frozen=True)
class ClusterSummary:
    cluster: int
    size: int
    cohesion: float  # mean similarity of the cluster's own edges (1.0 for a single face)
    representative: int  # node index: the face with the largest summed similarity to the rest of its cluster


def summarize(graph: Graph, ids: np.ndarray) -> list[ClusterSummary]:
    """Per cluster id: size, cohesion and representative face, largest cluster first."""
    ids = np.asarray(ids, np.int64)
    inside = ids[graph.src] == ids[graph.dst]
    strength = np.bincount(graph.src[inside], weights=graph.weight[inside], minlength=graph.n)
    clusters, compact, sizes = np.unique(ids, return_inverse=True, return_counts=True)
    edge_sum = np.bincount(compact[graph.src[inside]], weights=graph.weight[inside], minlength=len(clusters))
    edge_count = np.bincount(compact[graph.src[inside]], minlength=len(clusters))
    order = np.lexsort((np.arange(graph.n), -strength, compact))  # per cluster, the strongest face first
    first = np.ones(len(order), bool)
    first[1:] = compact[order][1:] != compact[order][:-1]
    representative = np.empty(len(clusters), np.int64)
    representative[compact[order][first]] = order[first]
    cohesion = np.where(edge_count > 0, edge_sum / np.maximum(edge_count, 1), 1.0)
    out = [ClusterSummary(int(c), int(s), round(float(h), 4), int(r))
           for c, s, h, r in zip(clusters, sizes, cohesion, representative, strict=True)]
    return sorted(out, key=lambda c: (-c.size, c.cluster))


# quality against known labels (the benchmark's, the tests'), or one clustering against another (method_threshold)
def bcubed(truth, predicted) -> tuple[float, float, float]:
    """BCubed precision, recall and F (Amigó et al. 2009): per item, the share of its predicted cluster that
    shares its true label, and the share of its true class that shares its predicted cluster."""
    truth, predicted = np.unique(truth, return_inverse=True)[1], np.unique(predicted, return_inverse=True)[1]
    both = np.unique(np.stack([truth, predicted], axis=1), axis=0, return_inverse=True)[1]
    both = both.ravel()
    together = np.bincount(both)[both]
    precision = float(np.mean(together / np.bincount(predicted)[predicted]))
    recall = float(np.mean(together / np.bincount(truth)[truth]))
    return precision, recall, 2 * precision * recall / (precision + recall)


def pairwise(truth, predicted) -> tuple[float, float, float]:
    """Pairwise precision, recall and F over all pairs of items put together / truly together."""
    truth, predicted = np.unique(truth, return_inverse=True)[1], np.unique(predicted, return_inverse=True)[1]
    both = np.unique(np.stack([truth, predicted], axis=1), axis=0, return_counts=True)[1]

    def pairs(counts):
        counts = counts.astype(np.float64)
        return float((counts * (counts - 1) / 2).sum())

    tp = pairs(both)
    predicted_pairs, true_pairs = pairs(np.bincount(predicted)), pairs(np.bincount(truth))
    precision = tp / predicted_pairs if predicted_pairs else 1.0
    recall = tp / true_pairs if true_pairs else 1.0
    return precision, recall, (2 * precision * recall / (precision + recall)) if precision + recall else 0.0
