"""Search-by-embedding through the API vs raw pymilvus on an identity-clustered gallery; recall against exact search.

Faces are synthetic but clustered like a face gallery: one random unit centre per identity, each face its centre
plus noise (same-identity cosine about 0.7), never uniform random vectors (which defeat every ANN index). The
gallery is loaded once into the collection `bench_<N>_<index>` and reused by later runs.

    .venv/bin/python bench/search_latency.py --faces 100000 --server            # starts Milvus 2.3 on loopback
    .venv/bin/python bench/search_latency.py --faces 100000 --lite              # Milvus Lite file
    .venv/bin/python bench/search_latency.py --faces 1000000 --milvus http://host:19530
    .venv/bin/python bench/search_latency.py --faces 1000000 --server --pin   # server apart from API and clients

Reported: load rows/s; recall@1 of the index vs exact search; p50/p99 latency of the API (uvicorn, one process)
vs raw pymilvus for the same queries, one client; requests/s at 1, 8 and 32 concurrent clients for raw pymilvus,
the API, and the Ray Serve deployment with and without dynamic batching (--serve). With --lite only the raw
figures: Milvus Lite serves one process, so the API cannot open the file this benchmark holds.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
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

from embedder.checkpoint import save_embedder
from embedder.model import FaceEmbedder
from embedder.spec import ModelSpec
from indexer.store import DEFAULT_EF, CollectionInfo, FaceIndex, FaceRow, connect
from jobs.api.keys import new_key

DIM = 512


def centres(identities: int) -> np.ndarray:
    c = np.random.default_rng(0).normal(size=(identities, DIM)).astype(np.float32)
    return c / np.linalg.norm(c, axis=1, keepdims=True)


def clustered(n: int, seed: int, identities: int) -> tuple[np.ndarray, np.ndarray]:
    """n faces of `identities` people (the same people for every seed), as unit vectors and labels."""
    rng = np.random.default_rng(seed + 1)
    labels = rng.integers(0, identities, size=n)
    faces = centres(identities)[labels] + rng.normal(scale=0.03, size=(n, DIM)).astype(np.float32)
    return faces / np.linalg.norm(faces, axis=1, keepdims=True), labels


def model_dir(workdir: Path) -> Path:
    """The API needs a model of the gallery's dimension; its weights do not matter for search by embedding."""
    directory = workdir / "model"
    save_embedder(FaceEmbedder(ModelSpec("test_resnet", DIM, (32, 32))), directory)
    return directory


def load(index: FaceIndex, n: int, identities: int, version: str, index_type: str) -> float:
    index.ensure(CollectionInfo(version, DIM, 0.5), index_type=index_type)
    if index.count() >= n:
        return float("nan")
    started = time.perf_counter()
    for start in range(0, n, 20_000):
        faces, labels = clustered(min(20_000, n - start), seed=start, identities=identities)
        index.upsert([FaceRow(f"f{start + i}", f"id{labels[i]}", faces[i], start + i) for i in range(len(faces))])
    index.flush()
    return n / (time.perf_counter() - started)


def wait_for_index(client, collection: str, rows: int, limit_s: float = 3600) -> float:
    """Seconds until the server has indexed every row (searches before that partly scan raw segments)."""
    started = time.perf_counter()
    while time.perf_counter() - started < limit_s:
        described = client.describe_index(collection, "vector")
        if described.get("indexed_rows", rows) >= rows:  # Milvus 2.3's pending_index_rows does not drop to 0
            return time.perf_counter() - started
        time.sleep(2)
    raise TimeoutError(f"index of {collection} not built after {limit_s:.0f} s")


def gallery_vectors(n: int, identities: int) -> np.ndarray:
    chunks = [clustered(min(20_000, n - s), seed=s, identities=identities)[0] for s in range(0, n, 20_000)]
    return np.concatenate(chunks)


def closed_loop(call, queries: np.ndarray, clients: int, seconds: float) -> float:
    """Requests/s with `clients` threads each sending requests back to back for `seconds`."""
    deadline = time.perf_counter() + seconds

    def worker(offset: int) -> int:
        done = 0
        while time.perf_counter() < deadline:
            call(queries[(offset + done * clients) % len(queries)])
            done += 1
        return done

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        total = sum(pool.map(worker, range(clients)))
    return total / (time.perf_counter() - started)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_api(extra: list[str], env: dict, port: int) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-m", "jobs.cli", "serve", "--port", str(port), *extra], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.5)
    process.kill()
    raise RuntimeError(f"the API ({' '.join(extra) or 'uvicorn'}) did not start")


def stop(process: subprocess.Popen) -> None:
    os.killpg(process.pid, 15)
    process.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, default=100_000)
    parser.add_argument("--identities", type=int, help="default: faces / 10")
    parser.add_argument("--index", default="HNSW", choices=["HNSW", "IVF_FLAT", "FLAT", "AUTOINDEX"])
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--milvus", help="a running Milvus server URI")
    where.add_argument("--server", action="store_true", help="start the `milvus` package's server on loopback")
    where.add_argument("--lite", action="store_true", help="a Milvus Lite file")
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--ef", type=int, default=DEFAULT_EF, help="HNSW search ef for the latency and API runs")
    parser.add_argument("--ef-sweep", default="", help="comma-separated ef values: recall@1 and raw latency of each")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=10.0, help="per throughput point")
    parser.add_argument("--serve", action="store_true", help="also measure the Ray Serve deployment")
    parser.add_argument("--api-loop", default="auto", choices=["auto", "asyncio", "uvloop"],
                        help="the uvicorn API's event loop")
    parser.add_argument("--pin", action="store_true",
                        help="with --server: the server on half the cores, this process and the API on the others")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "arcmatch-search-bench")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    identities = args.identities or max(1, args.faces // 10)
    args.workdir.mkdir(parents=True, exist_ok=True)

    server = None
    if args.server:
        server, uri = start_milvus_server(args.workdir / "milvus-server")
    elif args.pin:
        parser.error("--pin needs --server (the benchmark pins only a server it starts)")
    else:
        uri = args.milvus or str(args.workdir / "bench.db")
    result: dict = {"faces": args.faces, "identities": identities, "index": args.index, "k": args.k,
                    "store": "Milvus Lite" if "://" not in uri else "Milvus server"}
    processes: list[subprocess.Popen] = []
    try:
        if args.pin:
            result["pinned"] = pin_apart(server)
        model = model_dir(Path(tempfile.mkdtemp()))
        version = ModelSpec.load(model).version
        collection = f"bench_{args.faces}_{args.index.lower()}"
        client = connect(uri)
        if client.has_collection(collection):  # reuse a loaded gallery: the bench model takes its version
            version = FaceIndex(client, collection).info().model_version
            ModelSpec.load(model).with_version(version).save(model)
        index = FaceIndex(client, collection, consistency="Session", search_ef=args.ef)  # as the API searches
        result["load_rows_per_s"] = load(index, args.faces, identities, version, args.index)
        if "://" in uri:
            result["index_wait_s"] = wait_for_index(client, collection, args.faces)

        rng = np.random.default_rng(12345)
        gallery = gallery_vectors(args.faces, identities)
        probes = gallery[rng.integers(0, args.faces, args.queries)] + rng.normal(scale=0.02, size=(args.queries, DIM))
        probes = (probes / np.linalg.norm(probes, axis=1, keepdims=True)).astype(np.float32)
        exact = np.argmax(probes @ gallery.T, axis=1)
        result["ef"] = args.ef
        for ef in [int(e) for e in args.ef_sweep.split(",") if e] + [args.ef]:
            found = [hits[0].face_id for hits in index.search(probes, k=args.k, ef=ef)]
            recall = float(np.mean(np.asarray(found) == exact))
            timings = latencies(lambda vector, ef=ef: index.search(vector[None], k=args.k, ef=ef), probes[:200])
            result.setdefault("ef_sweep", []).append({"ef": ef, "recall_at_1": recall, **percentiles(timings)})
            print(result["ef_sweep"][-1], flush=True)
        result["recall_at_1"] = result["ef_sweep"][-1]["recall_at_1"]

        def raw(vector: np.ndarray) -> None:
            index.search(vector[None], k=args.k)

        result["raw_pymilvus"] = percentiles(latencies(raw, probes))
        result["raw_pymilvus"].update({f"rps_{c}": closed_loop(raw, probes, c, args.seconds) for c in (1, 8, 32)})
        # Milvus Lite serves one process, and this one holds the file: the API cannot open it beside us
        read_key, entry = new_key("bench", ["read"])
        env = {**os.environ, "ARCMATCH_MODEL": str(model), "ARCMATCH_API_KEYS": entry, "ARCMATCH_MILVUS_URI": uri,
               "ARCMATCH_GALLERY": collection, "ARCMATCH_SEARCH_K": str(args.k),
               "ARCMATCH_SEARCH_EF": str(args.ef)}
        modes = [("api", ["--loop", args.api_loop])] if "://" in uri else []
        if args.serve and modes:
            modes += [("serve_batched", ["--ray", "--batch-size", "16"]),
                      ("serve_unbatched", ["--ray", "--batch-size", "1"])]
        for name, extra in modes:
            port = free_port()
            process = start_api(extra, env, port)
            processes.append(process)
            http = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"X-API-Key": read_key}, timeout=60,
                                limits=httpx.Limits(max_connections=64))

            def api(vector: np.ndarray, http=http) -> httpx.Response:
                response = http.post("/v1/search/embedding", json={"embeddings": [vector.tolist()], "k": args.k})
                response.raise_for_status()
                return response

            for vector in probes[:20]:  # warm-up, as the raw client was by the recall runs: first requests load
                api(vector)             # the model's spec and the collection's info, and open connections
            answers: list[httpx.Response] = []
            latency = latencies(lambda vector, answers=answers, api=api: answers.append(api(vector)), probes)
            phases: dict[str, list[float]] = {}
            for response in answers:
                for phase, seconds in server_timing(response).items():
                    phases.setdefault(phase, []).append(seconds)
            inside = {f"{phase}_{k}": v for phase, times in phases.items() for k, v in percentiles(times).items()}
            result[name] = {**percentiles(latency), **inside,
                            **{f"rps_{c}": closed_loop(api, probes, c, args.seconds) for c in (1, 8, 32)}}
            http.close()
            stop(processes.pop())
        if "api" in result:
            result["api_over_raw_p50"] = result["api"]["p50_ms"] / result["raw_pymilvus"]["p50_ms"]
            result["api_over_raw_p99"] = result["api"]["p99_ms"] / result["raw_pymilvus"]["p99_ms"]
        client.close()
    finally:
        for process in processes:
            stop(process)
        if server is not None:
            server.stop()
    emit(result, args.out)


if __name__ == "__main__":
    main()
