"""Who uses the CPU during a one-client search: the Milvus server, the API and the client, per request, in
alternating raw-pymilvus and API rounds on one gallery. Tells a slow API from an API that slows the server down.

Runs against a gallery left by `bench/search_latency.py --server --workdir DIR` (it starts that server again).

    .venv/bin/python bench/search_cpu_share.py --workdir /tmp/arcmatch-search-bench-1m            # shared cores
    .venv/bin/python bench/search_cpu_share.py --workdir /tmp/arcmatch-search-bench-1m --pin      # server apart

Reported per round: p50/p99 latency, the API's own search call (its Server-Timing), and the CPU milliseconds
each process used per request (from /proc: every thread, user + system).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from harness import (  # bench/harness.py, beside this script
    emit,
    latencies,
    percentiles,
    pin_apart,
    server_timing,
    start_milvus_server,
)
from search_latency import free_port, model_dir, start_api, stop

from embedder.spec import ModelSpec
from indexer.store import DEFAULT_EF, FaceIndex, connect
from jobs.api.keys import new_key

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime of every thread


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--faces", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ef", type=int, default=DEFAULT_EF)
    parser.add_argument("--pin", action="store_true", help="the server on half the cores, API and client on the rest")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    server, uri = start_milvus_server(args.workdir / "milvus-server")
    result: dict = {"faces": args.faces, "ef": args.ef, "queries": args.queries, "rounds": []}
    api = None
    try:
        if args.pin:
            result["pinned"] = pin_apart(server)
        collection = f"bench_{args.faces}_hnsw"
        index = FaceIndex(connect(uri), collection, consistency="Session", search_ef=args.ef)
        model = model_dir(Path(tempfile.mkdtemp()))
        ModelSpec.load(model).with_version(index.info().model_version).save(model)
        key, entry = new_key("bench", ["read"])
        env = {**os.environ, "ARCMATCH_MODEL": str(model), "ARCMATCH_API_KEYS": entry, "ARCMATCH_MILVUS_URI": uri,
               "ARCMATCH_GALLERY": collection, "ARCMATCH_SEARCH_K": "10", "ARCMATCH_SEARCH_EF": str(args.ef)}
        port = free_port()
        api = start_api([], env, port)
        http = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"X-API-Key": key}, timeout=60)
        probes = np.random.default_rng(7).normal(size=(args.queries, index.info().dim)).astype(np.float32)
        probes /= np.linalg.norm(probes, axis=1, keepdims=True)

        def raw(vector) -> None:
            index.search(vector[None], k=10)

        def through_api(vector) -> httpx.Response:
            response = http.post("/v1/search/embedding", json={"embeddings": [vector.tolist()], "k": 10})
            response.raise_for_status()
            return response

        for vector in probes[:30]:  # warm both paths up
            raw(vector)
            through_api(vector)
        pids = {"server": server.server_proc.pid, "api": api.pid, "client": os.getpid()}
        for number in range(args.rounds):
            for mode in ("raw", "api"):
                answers: list[httpx.Response] = []
                call = raw if mode == "raw" else lambda vector, answers=answers: answers.append(through_api(vector))
                before = {name: cpu_seconds(pid) for name, pid in pids.items()}
                started = time.perf_counter()
                seconds = latencies(call, probes)
                wall = time.perf_counter() - started
                inside = [server_timing(response)["search"] for response in answers]
                row = {"round": number, "mode": mode, **percentiles(seconds),
                       **{f"cpu_ms_per_request_{name}": 1000 * (cpu_seconds(pid) - before[name]) / len(probes)
                          for name, pid in pids.items()}}
                row["server_cores_busy"] = row["cpu_ms_per_request_server"] / (1000 * wall / len(probes))
                if inside:
                    row.update({f"search_call_{k}": v for k, v in percentiles(inside).items()})
                print(row, flush=True)
                result["rounds"].append(row)
        http.close()
    finally:
        if api is not None:
            stop(api)
        server.stop()
    emit(result, args.out)


if __name__ == "__main__":
    main()
