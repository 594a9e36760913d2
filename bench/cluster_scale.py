"""How `arcmatch cluster` grows: synthetic identity-clustered vectors on a Milvus server, 10k to 1M faces.

    .venv/bin/python bench/cluster_scale.py [--faces 10000,100000,1000000] [--workdir DIR] [--out FILE]

Each size is its own collection of unlabelled 128-d unit vectors: identities of 10 faces, each face its person's
centre plus noise (same-person cosine ~0.75, strangers ~0 +- 0.09), loaded once into the `milvus` package's
server with an HNSW index (a --workdir keeps the server's data between runs). The job is the CLI's own
(jobs/pipelines/cluster.py: k-NN searches from Ray Data actors, k 20, edges at 0.5, Leiden). Reported per
size: each stage's wall time, the driver's peak RSS (sizes run smallest first, so each peak is that size's; a
size loaded in this run includes drawing its vectors), and BCubed precision / recall / F against the true
identities.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import emit, start_milvus_server  # noqa: E402
from indexer.cluster_store import ClusterStore  # noqa: E402
from indexer.clustering import bcubed  # noqa: E402
from indexer.ids import UNLABELLED  # noqa: E402
from indexer.store import CollectionInfo, FaceIndex, FaceRow, connect  # noqa: E402
from jobs.pipelines.cluster import cluster  # noqa: E402

DIM, PER_PERSON, SPREAD = 128, 10, 0.6


def person_of(face_ids: np.ndarray) -> np.ndarray:
    """Face i belongs to person i // PER_PERSON: how faces() lays them out, and how a run is scored."""
    return np.asarray(face_ids) // PER_PERSON


def faces(n: int, seed: int = 0) -> np.ndarray:
    """Unit vectors of n faces, each its person's centre plus noise."""
    rng = np.random.default_rng(seed)
    people = n // PER_PERSON
    centres = rng.normal(size=(people, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    person = person_of(np.arange(people * PER_PERSON))
    noise = rng.normal(size=(len(person), DIM)).astype(np.float32) * (SPREAD / np.sqrt(DIM))
    vectors = centres[person] + noise
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def load(index: FaceIndex, n: int) -> float:
    if index.exists() and index.count() == n:
        return 0.0
    started = time.perf_counter()
    index.ensure(CollectionInfo("synthetic", DIM, 0.5), index_type="HNSW")
    vectors = faces(n)
    for start in range(0, n, 5000):
        index.upsert([FaceRow(f"s{i}", UNLABELLED, vectors[i], i) for i in range(start, min(start + 5000, n))])
    index.flush()
    return time.perf_counter() - started


def wait_indexed(client, name: str) -> float:
    """Seconds until the server's HNSW index covers every row: a search before that scans the unindexed segments
    by brute force (the first 1M run here spent its first hour at a quarter of the indexed rate)."""
    started = time.perf_counter()
    while True:
        index = client.describe_index(name, client.list_indexes(name)[0])
        if index["state"] == "Finished" and index["indexed_rows"] >= index["total_rows"]:
            return time.perf_counter() - started
        time.sleep(5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", default="10000,100000,1000000")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/arcmatch-cluster-scale"))
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    server, uri = start_milvus_server(args.workdir / "milvus")
    results = []
    try:
        from jobs.runtime import init_ray

        init_ray(None)
        for n in (int(x) for x in args.faces.split(",")):
            client = connect(uri)
            name = f"scale_{n}"
            load_s = load(FaceIndex(client, name), n)
            index_s = wait_indexed(client, name)
            client.close()
            summary = cluster(milvus=uri, root=str(args.workdir / "store"), gallery=name, k=20, threshold=0.5,
                              concurrency=args.concurrency, ray_from=0)
            run = ClusterStore(str(args.workdir / "store"), name, name).latest()
            precision, recall, f = bcubed(person_of(run.face_ids), run.cluster_of)
            results.append({"faces": n, "load_s": round(load_s, 1), "index_wait_s": round(index_s, 1),
                            "stages_s": {k: round(v, 1) for k, v in summary.seconds.items()},
                            "edges": summary.edges, "clusters": summary.clusters, "singletons": summary.singletons,
                            "driver_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                            "bcubed_precision": round(precision, 4),
                            "bcubed_recall": round(recall, 4), "bcubed_f": round(f, 4)})
            print(results[-1], file=sys.stderr)
        emit({"dim": DIM, "per_person": PER_PERSON, "k": 20, "threshold": 0.5, "runs": results}, args.out)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
