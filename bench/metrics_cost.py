"""What /metrics costs a search: the API's POST /v1/search/embedding p50 and p99 with metrics on and off, measured
side by side in alternating rounds, each in a process of its own (the metrics registry and the Milvus call
observer are per process). A third mode, `shared`, is metrics on with a multiprocess directory
(PROMETHEUS_MULTIPROC_DIR, as `arcmatch serve --workers` and the Serve replicas run): every observation is written
to a memory-mapped file instead of a Python object.

Each round: a Milvus Lite gallery of `--faces` random 128-d faces, the API on loopback (uvicorn in a thread, as
jobs/api/local.py runs it) with the shared MobileFaceNet as its model (no image is decoded: searches send vectors),
`--warmup` requests, then `--requests` one-vector searches from one client, one at a time.

    .venv/bin/python bench/metrics_cost.py [--faces 10000] [--requests 1000] [--rounds 3] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import emit, onnx_model_dir, percentiles  # noqa: E402


def one_round(metrics: bool, faces: int, requests: int, warmup: int) -> dict:
    import time

    import httpx

    from indexer.ids import face_id
    from indexer.store import FaceRow
    from jobs.api.app import create_app
    from jobs.api.keys import new_key
    from jobs.api.local import serve_in_thread
    from jobs.service import IdentityService
    from jobs.settings import Settings

    work = Path(tempfile.mkdtemp())
    key, entry = new_key("bench", ["read"])
    settings = Settings(model=onnx_model_dir(work, "mobilefacenet.spec.json"), api_keys=entry,
                        milvus_uri=str(work / "g.db"), gallery="bench", archive=False,
                        audit_dir=str(work / "audit"), metrics=metrics)
    service = IdentityService.open(settings, create=True)  # the collection, for this model
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(faces, 128)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    for start in range(0, faces, 5000):
        service.index.upsert([FaceRow(f"f{i}", f"p{i // 2}", vectors[i], face_id(f"f{i}"))
                              for i in range(start, min(start + 5000, faces))])
    service.index.flush()
    service.close()
    probes = rng.normal(size=(warmup + requests, 128))
    with serve_in_thread(create_app(settings), start_timeout_s=120) as base, \
            httpx.Client(base_url=base, headers={"X-API-Key": key}, timeout=30) as api:
        seconds = []
        for n, probe in enumerate(probes):
            began = time.perf_counter()
            answer = api.post("/v1/search/embedding", json={"embeddings": [probe.tolist()], "threshold": 0.37})
            if n >= warmup:
                seconds.append(time.perf_counter() - began)
            assert answer.status_code == 200, answer.text
        scraped = api.get("/metrics").status_code
    mode = "off" if not metrics else "shared" if os.environ.get("PROMETHEUS_MULTIPROC_DIR") else "on"
    return {"mode": mode, "metrics_route": scraped, **percentiles(seconds)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--one", choices=["on", "off", "shared"], help=argparse.SUPPRESS)  # a round, in its own process
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_round(args.one != "off", args.faces, args.requests, args.warmup)))
        return
    rounds = []
    for _ in range(args.rounds):
        for mode in ("on", "off", "shared"):
            env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
            if mode == "shared":
                env["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="metrics-cost-")
            done = subprocess.run([sys.executable, __file__, "--one", mode, "--faces", str(args.faces), "--requests",
                                   str(args.requests), "--warmup", str(args.warmup)], capture_output=True, text=True,
                                  check=True, env=env)
            rounds.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(rounds[-1], file=sys.stderr)

    def over_off(mode: str) -> dict:
        def median(of: str, q: str) -> float:
            return float(np.median([r[q] for r in rounds if r["mode"] == of]))

        return {q: round(median(mode, q) / median("off", q), 3) for q in ("p50_ms", "p99_ms")}

    emit({"faces": args.faces, "requests": args.requests, "rounds": rounds, "on_over_off": over_off("on"),
          "shared_over_off": over_off("shared")}, args.out)


if __name__ == "__main__":
    main()
