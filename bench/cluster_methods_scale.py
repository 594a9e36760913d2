"""How long each clustering method takes on the graph `arcmatch cluster` builds, from 10k to 1M faces, without
Milvus: the k-NN graph is drawn in NumPy with the shape of a real one (each face's k neighbours: its own person's
other faces, then strangers, with cosines drawn like LFW-gray's MobileFaceNet neighbours: the same person around
0.70, strangers around 0.36 with a Gumbel tail), so the methods' own time and memory are measured apart from the
searches (bench/cluster_scale.py measures the whole job on a server).

    .venv/bin/python bench/cluster_methods_scale.py [--faces 10000 100000 1000000] [--k 20] [--raised] [--out FILE]

Time: wall seconds of `cluster_graph` per method; memory: peak traced by tracemalloc during it (NumPy's and
SciPy's arrays; igraph's own C memory is not traced); quality: BCubed F against the drawn people. `--raised` also
times what `arcmatch cluster` does for a method that chains when it chooses the threshold itself: Chinese whispers
once, then the method at each threshold tried from THRESHOLD up to the same person's mean (indexer/method_threshold.py).
"""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import emit  # noqa: E402
from indexer.clustering import METHODS, Graph, bcubed, cluster_graph  # noqa: E402
from indexer.method_threshold import raised_threshold  # noqa: E402

PER_PERSON = 10
THRESHOLD = 0.54  # what the neighbour rule chose on LFW-gray
SAME_MEAN = 0.70  # the drawn same-person scores' mean


def drawn_graph(faces: int, k: int, rng) -> tuple[Graph, np.ndarray]:
    people = np.arange(faces) // PER_PERSON
    own = min(PER_PERSON - 1, k)
    src = np.repeat(np.arange(faces), k)
    dst = np.empty((faces, k), np.int64)
    base = people * PER_PERSON
    offsets = rng.permuted(np.tile(np.arange(1, PER_PERSON), (faces, 1)), axis=1)[:, :own]
    dst[:, :own] = base[:, None] + (np.arange(faces)[:, None] - base[:, None] + offsets) % PER_PERSON
    dst[:, own:] = rng.integers(0, faces, size=(faces, k - own))
    weight = np.empty((faces, k), np.float32)
    weight[:, :own] = np.clip(rng.normal(0.70, 0.10, size=(faces, own)), -1, 1)
    weight[:, own:] = np.clip(0.36 + 0.034 * rng.gumbel(size=(faces, k - own)), -1, 1)
    return Graph.from_edges(faces, src, dst.ravel(), weight.ravel(), THRESHOLD), people


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--raised", action="store_true", help="also the threshold raised for each method")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rows = []
    for faces in args.faces:
        graph, people = drawn_graph(faces, args.k, np.random.default_rng(0))
        for method in METHODS:
            tracemalloc.start()
            began = time.perf_counter()
            labels = cluster_graph(graph, method)
            seconds = time.perf_counter() - began
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            row = {"faces": faces, "edges": graph.edges, "method": method, "seconds": round(seconds, 2),
                   "traced_peak_mb": round(peak / 2**20, 1), "bcubed_f": round(bcubed(people, labels)[2], 4)}
            if args.raised:
                began = time.perf_counter()
                raised = raised_threshold(graph, THRESHOLD, SAME_MEAN, method)
                row["raised"] = {"threshold": raised.threshold, "seconds": round(time.perf_counter() - began, 1),
                                 "clusterings": raised.tried, "bcubed_f": round(bcubed(people, raised.labels)[2], 4)}
            rows.append(row)
            print(row, file=sys.stderr)
    emit({"k": args.k, "threshold": THRESHOLD, "rows": rows}, args.out)


if __name__ == "__main__":
    main()
