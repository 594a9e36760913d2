"""`arcmatch cluster`: the unlabelled faces of a gallery grouped into candidate people (indexer/clustering.py).

1. The faces nobody has named (identity UNLABELLED) of the collection in service, by a scan of ids only.
2. Their k nearest unlabelled neighbours, by batched searches of the store itself: on a Milvus server, Ray Data
   actors (each with its own client) split the work; Milvus Lite opens its file from one process, so there the
   driver searches. The graph comes back as three NumPy arrays; nothing all-pairs is ever formed.
3. The graph clustered (Chinese whispers by default) from the graph alone, the ids made stable against the
   previous run, the run written to the cluster store (indexer/cluster_store.py) and, if asked, exported as Parquet
   (one row per face with its cluster's size, cohesion and representative face).

Edges count from a threshold: the caller's, else one read from the gallery's own neighbour scores
(indexer/edge_threshold.py), else the gallery's calibration, else the model's (edge_threshold says why). A method
that chains (connected components, Leiden) raises the neighbours' threshold to where its clusters agree best with
Chinese whispers' (indexer/method_threshold.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common.errors import NotFound
from embedder.errors import ModelError
from indexer.calibration import stored as stored_calibration
from indexer.cluster_store import ClusterInfo, ClusterStore
from indexer.clustering import METHODS, Graph, cluster_graph, stable_ids, summarize
from indexer.edge_threshold import NeighbourFit, fit_neighbours, ranked_scores
from indexer.galleries import Galleries
from indexer.method_threshold import clusterings, raised_threshold
from indexer.store import FaceIndex, connect, is_lite_uri
from jobs.progress import Console, silent

SEARCH_BATCH = 256
THRESHOLD_FROM = {"given": "threshold given", "neighbours": "the gallery's own neighbour statistics",
                  "raised": "the gallery's own neighbour statistics, raised to where the method's clusters agree "
                            "best with Chinese whispers'",
                  "kept": "the gallery's own neighbour statistics, where the method's clusters agree best with "
                          "Chinese whispers' already",
                  "gallery": "the gallery's calibration", "model": "the model's threshold"}
RAY_FROM = 20_000  # faces: fewer are searched from the driver (a second of searching vs ~10 s of actor start-up)


@dataclass
class ClusterRunSummary:
    collection: str = ""
    faces: int = 0
    edges: int = 0
    clusters: int = 0  # of two faces or more
    singletons: int = 0
    largest: int = 0
    kept_ids: int = 0  # clusters whose id the previous run already had
    expired: int = 0  # faces kept from searches past their retention, left out (the service deletes them now and then)
    method: str = ""
    threshold: float = 0.0
    threshold_source: str = ""
    agreement: float | None = None  # with Chinese whispers' clusters, where the threshold was raised for the method
    k: int = 0
    run: str = ""
    seconds: dict[str, float] = field(default_factory=dict)

    def lines(self) -> list[str]:
        agreed = f" (BCubed F {self.agreement:.3f} between the two)" if self.agreement is not None else ""
        past = f" ({self.expired} kept from searches past their retention left out)" if self.expired else ""
        return [f"{self.collection}: {self.faces} unlabelled faces{past}, {self.edges} edges at or above "
                f"{self.threshold:.4f} ({THRESHOLD_FROM[self.threshold_source]}{agreed}; k {self.k})",
                f"{self.method}: {self.clusters} clusters of two faces or more (largest {self.largest}), "
                f"{self.singletons} faces alone; {self.kept_ids} clusters kept their id from the previous run",
                "time: " + ", ".join(f"{k} {v:.1f} s" for k, v in self.seconds.items())]


def neighbours_batch(index: FaceIndex, face_ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(source face id, neighbour face id, similarity) of the k nearest unlabelled faces of each face."""
    stored = index.vectors([int(f) for f in face_ids])
    present = [int(f) for f in face_ids if int(f) in stored]  # a face named or deleted since the scan: no edges
    if not present:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32)
    hits = index.search(np.stack([stored[f] for f in present]), k=k + 1, among="unlabelled")
    src = [f for f, found in zip(present, hits, strict=True) for _ in found]
    dst = [h.face_id for found in hits for h in found]
    weight = [h.score for found in hits for h in found]
    return np.asarray(src, np.int64), np.asarray(dst, np.int64), np.asarray(weight, np.float32)


class NeighbourSearch:
    """Ray Data actor: one Milvus client, reused for every batch of face ids."""

    def __init__(self, uri: str, token: str | None, collection: str, k: int) -> None:
        self.index = FaceIndex(connect(uri, token), collection, consistency="Bounded")
        self.k = k

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        src, dst, weight = neighbours_batch(self.index, batch["face_id"], self.k)
        return {"src": src, "dst": dst, "weight": weight}


def _edges_in_driver(index: FaceIndex, ids: np.ndarray, k: int, bar) -> tuple[np.ndarray, ...]:
    parts = []
    for start in range(0, len(ids), SEARCH_BATCH):
        chunk = ids[start : start + SEARCH_BATCH]
        parts.append(neighbours_batch(index, chunk, k))
        bar.update(len(chunk))
    return tuple(np.concatenate([p[i] for p in parts]) for i in range(3))


def _edges_with_ray(uri: str, token: str | None, collection: str, ids: np.ndarray, k: int, concurrency: int,
                    bar) -> tuple[np.ndarray, ...]:
    import pyarrow as pa
    import ray.data

    # the blocks go in as they are: a step between them and the actors (a rename, say) is a task of a whole CPU,
    # which a cluster whose nodes the actors share can never place once a node's death makes it run again
    blocks = np.array_split(ids, max(1, min(len(ids) // SEARCH_BATCH, concurrency * 8)))  # work for every actor
    ds = ray.data.from_arrow([pa.table({"face_id": block}) for block in blocks])
    actors = ray.data.ActorPoolStrategy(size=min(concurrency, len(blocks)))  # no idle actor for a small gallery
    ds = ds.map_batches(NeighbourSearch, fn_constructor_args=(uri, token, collection, k), batch_size=SEARCH_BATCH,
                        batch_format="numpy", compute=actors, num_cpus=0.5)
    parts = []
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        parts.append((batch["src"], batch["dst"], batch["weight"]))
        bar.update(len(np.unique(batch["src"])))
    return tuple(np.concatenate([p[i] for p in parts]) if parts else np.empty(0) for i in range(3))


def neighbour_edges(index: FaceIndex, ids: np.ndarray, k: int, *, milvus: str, token: str | None = None,
                    concurrency: int = 2, ray_from: int = RAY_FROM, bar=None) -> tuple[np.ndarray, ...]:
    """(source node, neighbour node, similarity) of the k-NN hits of the unlabelled faces `ids` (sorted): node i
    is ids[i], self-hits included, no threshold applied. Ray actors search when the store is a server and there are
    at least `ray_from` faces; below that their start costs more than they save."""
    if bar is None:
        with silent().stage("neighbours") as quiet:
            return neighbour_edges(index, ids, k, milvus=milvus, token=token, concurrency=concurrency,
                                   ray_from=ray_from, bar=quiet)
    if is_lite_uri(milvus) or len(ids) < ray_from:
        src, dst, weight = _edges_in_driver(index, ids, k, bar)
    else:
        src, dst, weight = _edges_with_ray(milvus, token, index.collection, ids, k, concurrency, bar)
    at = np.clip(np.searchsorted(ids, dst), 0, len(ids) - 1)
    known = ids[at] == dst  # a neighbour named since the scan is not in the graph
    return np.searchsorted(ids, src[known]), at[known], np.asarray(weight, np.float32)[known]


def neighbour_graph(index: FaceIndex, ids: np.ndarray, k: int, threshold: float, *, milvus: str,
                    token: str | None = None, concurrency: int = 2, ray_from: int = RAY_FROM, bar=None) -> Graph:
    """The k-NN graph of the unlabelled faces `ids` (sorted) with the edges at or above `threshold`."""
    src, dst, weight = neighbour_edges(index, ids, k, milvus=milvus, token=token, concurrency=concurrency,
                                       ray_from=ray_from, bar=bar)
    return Graph.from_edges(len(ids), src, dst, weight, threshold)


def edge_threshold(index: FaceIndex, given: float | None, scores: np.ndarray | None = None
                   ) -> tuple[float, str, NeighbourFit | None]:
    """(threshold, where it comes from, the neighbours' fit where it gave the threshold), first found of:
    - "given": the caller's;
    - "neighbours": read from the gallery's own k-NN scores (`scores`, one ranked row per face), where the
      strangers' and the same person's parts can be told apart (indexer/edge_threshold.py);
    - "gallery": the gallery's calibration (`arcmatch calibrate`);
    - "model": the model's threshold.
    Why the neighbours come before the calibration: a calibration is made for a search's FPIR at the gallery's
    size and target, over its labelled faces, not for clustering; measured on LFW-gray and ORL
    (bench/cluster_threshold.py, docs/BENCHMARKS.md) the neighbours' threshold came within 0.03 of the best BCubed F
    for Leiden and Chinese whispers, and the FPIR-1% calibration of the same faces did not. The model's threshold
    (a pair FAR) chains people together at 13k faces; it is the last resort."""
    if given is not None:
        return given, "given", None
    fitted = fit_neighbours(scores) if scores is not None else None
    if fitted is not None:
        return fitted.threshold, "neighbours", fitted
    own = stored_calibration(index)
    if own is not None:
        return own.threshold, "gallery", None
    if index.info().threshold is None:
        raise ModelError("the collection's model has no calibrated threshold: pass --threshold")
    return index.info().threshold, "model", None


def cluster(
    *,
    milvus: str,
    root: str,
    token: str | None = None,
    gallery: str = "faces",
    k: int = 20,
    threshold: float | None = None,
    method: str = METHODS[0],
    export_parquet: str | Path | None = None,
    concurrency: int = 2,
    ray_from: int | None = None,
    seed: int = 0,
    console: Console | None = None,
) -> ClusterRunSummary:
    """Cluster the unlabelled faces of gallery `gallery` (the collection it serves); the run is kept under `root`
    (the face archive's location). Ray actors search from `ray_from` faces on (default RAY_FROM), on a server."""
    console = console or silent()
    client = connect(milvus, token)
    collection = Galleries(client, gallery).serving()
    if collection is None:
        raise NotFound(f"gallery {gallery!r} does not exist; ingest faces first")
    index = FaceIndex(client, collection)
    given = threshold
    summary = ClusterRunSummary(collection=collection, method=method, k=k)
    started = time.perf_counter()
    with console.stage("scan", unit="faces", bar=False):
        ids = np.fromiter((f for f, _ in index.unlabelled_faces()), dtype=np.int64)
        expired = np.fromiter(index.expired_unlabelled(int(time.time())), dtype=np.int64)
    ids = np.sort(ids[~np.isin(ids, expired)])  # personal data past its retention is no one's cluster
    summary.expired = len(expired)
    if not len(ids):
        raise NotFound(f"gallery {gallery!r} has no unlabelled faces (ingest some with --unlabelled)")
    summary.faces = len(ids)
    summary.seconds["scan"] = time.perf_counter() - started

    started = time.perf_counter()
    with console.stage("neighbours", total=len(ids), unit="faces") as bar:
        src, dst, weight = neighbour_edges(index, ids, k, milvus=milvus, token=token, concurrency=concurrency,
                                           ray_from=RAY_FROM if ray_from is None else ray_from, bar=bar)
    scores = ranked_scores(len(ids), src, dst, weight, k) if given is None else None
    summary.threshold, summary.threshold_source, fitted = edge_threshold(index, given, scores)
    client.close()
    summary.seconds["neighbours"] = time.perf_counter() - started

    started = time.perf_counter()
    store = ClusterStore(root, gallery, collection)
    previous_run = store.latest()
    previous = previous_run.previous_labels(ids) if previous_run else np.full(len(ids), -1, np.int64)
    next_id = 1 + max((c.cluster for c in previous_run.clusters), default=-1) if previous_run else 0
    graph, labels = Graph.from_edges(len(ids), src, dst, weight, summary.threshold), None
    if fitted is not None and method != "chinese-whispers":
        with console.stage(f"threshold for {method}", total=clusterings(fitted.threshold, fitted.same_mean),
                           unit="clusterings") as bar:
            raised = raised_threshold(graph, fitted.threshold, fitted.same_mean, method, seed=seed,
                                      each=lambda t: bar.update(1, note=f"{t:.3f}"))
        source = "raised" if raised.threshold > fitted.threshold else "kept"  # it may stay where it was
        summary.threshold, summary.threshold_source, labels = raised.threshold, source, raised.labels
        summary.agreement = raised.agreement
        graph = graph.above(raised.threshold)
        summary.seconds["threshold"] = time.perf_counter() - started
        started = time.perf_counter()
    summary.edges = graph.edges
    with console.timed("cluster"):  # from the graph alone; the previous run only lends its ids
        if labels is None:
            labels = cluster_graph(graph, method, seed=seed)
        cluster_of = stable_ids(labels, previous, next_id)
        infos = [ClusterInfo(c.cluster, c.size, c.cohesion, int(ids[c.representative]))
                 for c in summarize(graph, cluster_of)]
    summary.run = store.write(ids, cluster_of, infos)
    summary.seconds["cluster"] = time.perf_counter() - started  # with writing the run
    sizes = np.array([c.size for c in infos])
    summary.clusters, summary.singletons = int((sizes >= 2).sum()), int((sizes == 1).sum())
    summary.largest = int(sizes.max())
    before = {c.cluster for c in previous_run.clusters if c.size >= 2} if previous_run else set()
    summary.kept_ids = sum(1 for c in infos if c.size >= 2 and c.cluster in before)
    if export_parquet is not None:
        export(export_parquet, ids, cluster_of, infos)
    return summary


def export(path: str | Path, ids: np.ndarray, cluster_of: np.ndarray, infos: list[ClusterInfo]) -> None:
    """One row per face: face_id, cluster, and its cluster's size, cohesion and representative face."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    by_id = {c.cluster: c for c in infos}
    rows = [by_id[int(c)] for c in cluster_of]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"face_id": ids, "cluster": cluster_of, "cluster_size": [c.size for c in rows],
                             "cohesion": [c.cohesion for c in rows],
                             "representative": [c.representative for c in rows]}), str(path))
