"""Clustering quality on LFW-gray: all 13,233 faces treated as unlabelled, grouped by `arcmatch cluster`'s
methods and by scikit-learn's DBSCAN on exact cosine distances (the reference), scored against the 5,749 people.

    .venv/bin/python bench/cluster_lfw.py [--server] [--k 20] [--out FILE]

The faces are embedded once with the shared MobileFaceNet (as MODEL.md: box crop, flip TTA; cached between runs)
and written as unlabelled rows into a Milvus collection (HNSW). The k-NN graph comes from the job's own batched
searches; each method then clusters the same graph. Edges count at the model's calibrated threshold (LFW pairs,
FAR 1e-3), and at a few others for the trade-off. DBSCAN gets a sweep of eps and min_samples and its best F is the
reference. Quality: BCubed and pairwise precision / recall / F, number of clusters (singletons included).
Time and peak traced memory (tracemalloc: NumPy's and SciPy's arrays) of the graph and of each method.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import (  # noqa: E402
    CACHE,
    SHARED,
    embed_cached,
    emit,
    lfw_pair_threshold,
    milvus_store,
    onnx_model_dir,
)
from indexer.clustering import METHODS, bcubed, cluster_graph, pairwise  # noqa: E402
from indexer.ids import UNLABELLED, face_id  # noqa: E402
from indexer.store import CollectionInfo, FaceIndex, FaceRow, connect  # noqa: E402
from jobs.pipelines.cluster import cluster, neighbour_graph  # noqa: E402

LFW = SHARED / "data" / "lfw_gray"


def scores(truth: np.ndarray, labels: np.ndarray) -> dict:
    b = bcubed(truth, labels)
    p = pairwise(truth, labels)
    return {"bcubed_precision": round(b[0], 4), "bcubed_recall": round(b[1], 4), "bcubed_f": round(b[2], 4),
            "pairwise_precision": round(p[0], 4), "pairwise_recall": round(p[1], 4), "pairwise_f": round(p[2], 4),
            "clusters": int(len(np.unique(labels)))}


def traced(fn):
    """(result, seconds, peak MB of memory traced while it ran)."""
    tracemalloc.start()
    started = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return out, round(seconds, 2), round(peak / 1e6, 1)


def dbscan_sweep(vectors: np.ndarray, truth: np.ndarray, thresholds: list[float]) -> list[dict]:
    from sklearn.cluster import DBSCAN

    out = []
    for t in thresholds:
        for min_samples in (1, 2):
            started = time.perf_counter()
            labels = DBSCAN(eps=1.0 - t, min_samples=min_samples, metric="cosine", n_jobs=2).fit_predict(vectors)
            noise = labels < 0  # DBSCAN's noise: each face is its own cluster
            labels = np.where(noise, labels.max() + 1 + np.arange(len(labels)), labels)
            out.append({"threshold": round(t, 4), "eps": round(1.0 - t, 4), "min_samples": min_samples,
                        **scores(truth, labels), "seconds": round(time.perf_counter() - started, 1)})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", action="store_true", help="a Milvus server on loopback instead of Milvus Lite")
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--cache", type=Path, default=CACHE)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if not LFW.is_dir():
        raise SystemExit(f"LFW-gray not found at {LFW}: this benchmark needs ../shared")
    workdir = Path(tempfile.mkdtemp(prefix="arcmatch-cluster-"))
    paths = sorted(LFW.glob("*/*.jpg"))
    vectors = embed_cached(onnx_model_dir(workdir, "mobilefacenet.spec.json"), paths,
                           args.cache / "lfw_gray_mobilefacenet.npz")
    model = lfw_pair_threshold(vectors)
    truth_of = {face_id(str(p)): p.parent.name for p in paths}

    with milvus_store(str(workdir / "lfw.db"), workdir / "milvus" if args.server else None) as uri:
        from jobs.runtime import init_ray

        init_ray(None)
        client = connect(uri)
        index = FaceIndex(client, "lfw")
        index.ensure(CollectionInfo("mobilefacenet", 128, model["threshold"]), index_type="HNSW")
        rows = [FaceRow(str(p), UNLABELLED, vectors[str(p)], face_id(str(p))) for p in paths]
        for start in range(0, len(rows), 2000):
            index.upsert(rows[start : start + 2000])
        index.flush()
        result: dict = {"faces": len(rows), "people": len({p.parent.name for p in paths}), "k": args.k,
                        "store": "server" if args.server else "lite", "model_threshold": model}

        job = cluster(milvus=uri, root=str(workdir / "store"), gallery="lfw", k=args.k)
        result["job"] = {"seconds": {k: round(v, 1) for k, v in job.seconds.items()}, "clusters": job.clusters,
                         "singletons": job.singletons, "edges": job.edges}

        ids = np.array(sorted(truth_of))
        truth = np.array([truth_of[i] for i in ids])
        started = time.perf_counter()  # not traced: tracemalloc slows the driver's own Python several times
        graph_all = neighbour_graph(index, ids, args.k, -1.0, milvus=uri)
        result["graph"] = {"seconds": round(time.perf_counter() - started, 1), "edges_any_score": graph_all.edges}
        thresholds = sorted({round(model["threshold"], 4), 0.40, 0.45, 0.50, 0.55, 0.60, 0.65, 0.70})
        result["methods"] = []
        for t in thresholds:
            graph = graph_all.above(t)
            for method in METHODS:
                labels, seconds, peak = traced(lambda g=graph, m=method: cluster_graph(g, m))
                result["methods"].append({"method": method, "threshold": t, **scores(truth, labels),
                                          "seconds": seconds, "peak_mb": peak})
                print(result["methods"][-1], file=sys.stderr)
        client.close()
        matrix = np.stack([vectors[str(p)] for p in paths])
        truth_paths = np.array([p.parent.name for p in paths])
        result["dbscan"] = dbscan_sweep(matrix, truth_paths, thresholds)
        best = max(result["dbscan"], key=lambda r: r["bcubed_f"])
        result["dbscan_best"] = best
        emit(result, args.out)


if __name__ == "__main__":
    main()
