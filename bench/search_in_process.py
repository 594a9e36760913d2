"""The raw search's latency in one plain process, called directly or through asyncio.to_thread (as the API calls
it), before and after torch and a model are loaded: what the API adds beyond these is the API's own.

Runs against a gallery left by `bench/search_latency.py --server --workdir DIR` (it starts that server again).

    .venv/bin/python bench/search_in_process.py --workdir /tmp/arcmatch-search-bench-1m --faces 1000000
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import numpy as np
from harness import emit, latencies, percentiles, start_milvus_server  # bench/harness.py, beside this script

from indexer.store import DEFAULT_EF, FaceIndex, connect


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--faces", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--ef", type=int, default=DEFAULT_EF)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    server, uri = start_milvus_server(args.workdir / "milvus-server")
    result: dict = {"faces": args.faces, "ef": args.ef, "queries": args.queries}
    try:
        index = FaceIndex(connect(uri), f"bench_{args.faces}_hnsw", consistency="Session", search_ef=args.ef)
        probes = np.random.default_rng(0).normal(size=(args.queries, index.info().dim)).astype(np.float32)
        probes /= np.linalg.norm(probes, axis=1, keepdims=True)
        loop = asyncio.new_event_loop()

        def direct(vector):
            index.search(vector[None], k=10)

        def threaded(vector):
            loop.run_until_complete(asyncio.to_thread(index.search, vector[None], 10))

        def run(call, name: str) -> None:
            seconds = latencies(call, probes)
            result[name] = {**percentiles(seconds), "max_ms": 1000 * max(seconds)}
            print(name, result[name], flush=True)

        for vector in probes[:50]:
            direct(vector)
        run(direct, "direct")
        run(threaded, "to_thread")
        from embedder.model import FaceEmbedder  # torch and timm, as the API process holds them
        from embedder.spec import ModelSpec

        FaceEmbedder(ModelSpec("test_resnet", 16, (32, 32)))
        run(direct, "direct_torch_loaded")
        run(threaded, "to_thread_torch_loaded")
    finally:
        server.stop()
    emit(result, args.out)


if __name__ == "__main__":
    main()
