"""What listing a deployment's galleries costs: `GET /v1/galleries` (and `arcmatch galleries list`) at many galleries.

    .venv/bin/python bench/galleries_list.py --galleries 100 --server   # the Milvus 2.3 server on loopback
    .venv/bin/python bench/galleries_list.py --galleries 100            # Milvus Lite

Makes `galleries` small galleries (arcmatch's layout: an alias over a collection of the model's, `faces` faces
each), then times three listings side by side, `--rounds` times each, in turn: the way before pages (every
gallery's name, then a summary of each read afresh: indexer.galleries.list_galleries + jobs.gallery_admin.summary),
every gallery in one listing now (jobs.gallery_admin.summaries), and one page of 100 now. For each: the median
seconds and the calls into Milvus it made (indexer.milvus.OBSERVERS). Writes a JSON line of figures.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import emit, milvus_store  # noqa: E402

DIM = 32


def make(client, galleries: int, faces: int) -> None:
    from indexer.galleries import Galleries
    from indexer.store import CollectionInfo, FaceRow

    rng = np.random.default_rng(0)
    info = CollectionInfo(model_version="bench-list:1", dim=DIM, threshold=0.5)
    for g in range(galleries):
        index = Galleries(client, f"g{g:05d}").open(info, create=True, index_type="FLAT")
        vectors = rng.standard_normal((faces, DIM)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        index.upsert([FaceRow(f"s{i}", f"p{i}", v, g * faces + i + 1) for i, v in enumerate(vectors)])
        index.flush()


def listings(client) -> dict:
    from indexer.galleries import list_galleries
    from jobs import gallery_admin

    return {
        "before: names, then each summary": lambda: [gallery_admin.summary(client, n) for n in list_galleries(client)],
        "now: every gallery": lambda: gallery_admin.summaries(client)[0],
        "now: a page of 100": lambda: gallery_admin.summaries(client, limit=100)[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--galleries", type=int, default=100)
    parser.add_argument("--faces", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--server", action="store_true", help="a Milvus server on loopback instead of Lite")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    from indexer.milvus import OBSERVERS
    from indexer.store import connect

    calls: Counter = Counter()
    OBSERVERS.append(lambda what, seconds, outcome: calls.update([what]))
    scratch = Path(tempfile.mkdtemp(prefix="galleries-list-"))
    with milvus_store(str(scratch / "g.db"), scratch / "server" if args.server else None) as uri:
        client = connect(uri)
        began = time.perf_counter()
        make(client, args.galleries, args.faces)
        made_s = time.perf_counter() - began
        ways = listings(client)
        seconds: dict[str, list[float]] = {name: [] for name in ways}
        counted: dict[str, dict] = {}
        shown: dict[str, int] = {}
        for _ in range(args.rounds):
            for name, listing in ways.items():  # in turn, so that drift on a shared machine falls on each alike
                calls.clear()
                began = time.perf_counter()
                shown[name] = len(listing())
                seconds[name].append(time.perf_counter() - began)
                counted[name] = dict(calls)
        client.close()
    emit({"store": "server" if args.server else "lite", "galleries": args.galleries, "faces": args.faces,
          "rounds": args.rounds, "made_s": round(made_s, 1),
          "listings": {name: {"median_s": round(statistics.median(seconds[name]), 4), "listed": shown[name],
                              "milvus_calls": sum(counted[name].values()), "by_call": counted[name]}
                       for name in ways}}, args.out)


if __name__ == "__main__":
    main()
