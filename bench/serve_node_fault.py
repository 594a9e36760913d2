"""A worker node's death under the API on Ray Serve: two replicas on two worker nodes of a three-node cluster on this
machine, steady searches and enrollments from several clients, one replica's node killed. How many requests fail,
for how long, is every acknowledged enrollment still there, and when does a replacement replica serve?

The cluster: tests/ray_cluster.py (a head with no CPUs, where Serve's controller and its one HTTP proxy run; two
one-CPU worker nodes; a machine's death is every process of a node stopped and killed at once). The store: the
Milvus 2.3 server on loopback (PyPI `milvus`; two replicas cannot share a Lite file). The app: the suite's tiny
model, 2 replicas of one CPU each, so each worker node holds one. The clients: `--searchers` threads searching one
photo at a time and `--enrollers` threads enrolling a new person each time, each request on a connection of its
own, for `--seconds`; the node that holds a replica dies `--kill-at` seconds in, a replacement node joins 5 s later.

Counted: requests by outcome (2xx, 503 with Retry-After, other status, connection failure) in each second; the
window from the kill to the last failure; when the first request answered by a replica that was not there before
the kill came back (the replicas' own request counts, read from the metrics directory they share); and, at the
end, whether every enrollment that was answered 201 is in the gallery (lost) and none more than once.

    .venv/bin/python bench/serve_node_fault.py [--seconds 60 --kill-at 15] [--through-client] [--bare-proxy]
        [--out FILE]

`--through-client` sends the same requests through `arcmatch_client` (its retries on), as an application would;
`--bare-proxy` leaves out the middleware every node's Serve proxy runs (jobs/api/proxy.py), as before it.

Needs the machine's one Milvus server slot free (not while the test suite runs).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import emit, start_milvus_server  # noqa: E402
from jobs.api.keys import new_key  # noqa: E402
from jobs.api.proxy import PROXY_CALLBACK, PROXY_ENV  # noqa: E402
from tests.helpers import counts_per_process, listen_port, png  # noqa: E402
from tests.ray_cluster import AUTH, Cluster  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "tests" / "fixtures" / "tiny_model"
REPLICA = "ServeReplica:arcmatch"  # in the process title Ray gives a Serve replica of the app "arcmatch"

DEPLOY = """
import sys, time
from ray import serve
from jobs.api.serve import build_application
from jobs.settings import Settings
port, metrics_dir = int(sys.argv[1]), sys.argv[2]
serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})
serve.run(build_application(Settings.load(), min_replicas=2, max_batch_size=8, num_cpus=1.0,
                            metrics_dir=metrics_dir), name="arcmatch", route_prefix="/")
print("deployed", flush=True)
"""


def deploy(cluster: Cluster, scratch: Path, uri: str, keys: str) -> tuple[str, Path]:
    """The app on the cluster (a driver that deploys it and leaves; Serve keeps it): (base URL, metrics dir)."""
    port, metrics_dir = listen_port(), scratch / "metrics"
    env = {**os.environ, **AUTH, "RAY_ADDRESS": cluster.address, "ARCMATCH_MODEL": str(MODEL),
           "ARCMATCH_API_KEYS": keys, "ARCMATCH_MILVUS_URI": uri, "ARCMATCH_GALLERY": "serve_fault",
           "ARCMATCH_ARCHIVE": "false", "ARCMATCH_AUDIT_DIR": str(scratch / "audit"),
           "ARCMATCH_ENROLL_CONFLICT_CHECK": "false"}  # many synthetic people: a look-alike would be a 409
    done = subprocess.run([sys.executable, "-c", DEPLOY, str(port), str(metrics_dir)], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=600)
    if "deployed" not in done.stdout:
        raise SystemExit(f"the app did not deploy: {done.stderr[-3000:]}")
    return f"http://127.0.0.1:{port}", metrics_dir


class Traffic:
    """Client threads, each request on a fresh connection; every outcome with its time since the start."""

    def __init__(self, base: str, key: str, through_client: bool = False) -> None:
        self.base, self.headers, self.key, self.through_client = base, {"X-API-Key": key}, key, through_client
        self.outcomes: list[tuple[float, str, str]] = []  # (seconds, kind, outcome)
        self.acknowledged: list[str] = []
        self.stop = threading.Event()
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self._enrolled = 0

    def _one(self, kind: str) -> None:
        if self.through_client:
            self._one_through_client(kind)
            return
        try:
            with httpx.Client(base_url=self.base, headers=self.headers, timeout=30) as client:
                if kind == "search":
                    answer = client.post("/v1/search", files={"image": ("p.png", png(1, 1), "image/png")})
                else:
                    with self._lock:
                        self._enrolled += 1
                        number = self._enrolled
                    name = f"person{number:05d}"
                    answer = client.post(f"/v1/identities/{name}/faces",
                                         files=[("images", ("a.png", png(10 + number), "image/png"))])
                    if answer.status_code == 201:
                        with self._lock:
                            self.acknowledged.append(name)
            outcome = str(answer.status_code)
            if answer.status_code == 503 and "retry-after" in answer.headers:
                outcome = "503 retry-after"
        except httpx.TransportError as exc:
            outcome = f"connection: {type(exc).__name__}"
        with self._lock:
            self.outcomes.append((time.monotonic() - self.started, kind, outcome))

    def _one_through_client(self, kind: str) -> None:
        from arcmatch_client import Client
        from arcmatch_client.errors import ArcmatchError

        with self._lock:
            self._enrolled += kind == "enroll"
            number = self._enrolled
        try:
            with Client(self.base, self.key, timeout=30, max_wait_s=1.0) as client:
                if kind == "search":
                    client.search(png(1, 1))
                else:
                    client.enroll(f"person{number:05d}", [png(10 + number)])
                    with self._lock:
                        self.acknowledged.append(f"person{number:05d}")
            outcome = "200"
        except ArcmatchError as exc:
            outcome = f"client: {type(exc).__name__}"
        with self._lock:
            self.outcomes.append((time.monotonic() - self.started, kind, outcome))

    def run(self, kind: str) -> None:
        while not self.stop.is_set():
            self._one(kind)


def in_gallery(uri: str, names: list[str]) -> tuple[int, int]:
    """(of `names`, how many have a face in the gallery; faces beyond one per name)."""
    from indexer.galleries import Galleries
    from indexer.store import FaceIndex, connect

    client = connect(uri)
    try:
        index = FaceIndex(client, Galleries(client, "serve_fault").serving())
        counts = [len(index.faces_of(name)) for name in names]
        return sum(1 for c in counts if c), sum(max(0, c - 1) for c in counts)
    finally:
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--kill-at", type=float, default=15)
    parser.add_argument("--searchers", type=int, default=4)
    parser.add_argument("--enrollers", type=int, default=2)
    parser.add_argument("--through-client", action="store_true")
    parser.add_argument("--bare-proxy", action="store_true", help="Serve's proxy without arcmatch's middleware "
                        "(jobs/api/proxy.py): its own answer to a request whose replica died")
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.bare_proxy:
        os.environ.pop(PROXY_CALLBACK, None)
    else:  # every node's proxy reads it from the environment `ray start` gives it, as k8s/ sets it
        os.environ.update(PROXY_ENV)

    scratch = Path(tempfile.mkdtemp(prefix="serve-fault-"))
    key, entry = new_key("bench", ["read", "write"])
    server, uri = start_milvus_server(scratch / "milvus", **{"common.session.ttl": 10})
    try:
        cluster = Cluster(scratch, workers=2)
    except BaseException:
        server.stop()
        raise
    try:
        base, metrics_dir = deploy(cluster, scratch, uri, entry)
        with httpx.Client(base_url=base, headers={"X-API-Key": key}, timeout=60) as client:
            files = [("images", ("a.png", png(1), "image/png"))]
            assert client.post("/v1/identities/searched/faces", files=files).status_code == 201
        def answered() -> dict[str, float]:  # requests by replica pid
            return counts_per_process(metrics_dir, "arcmatch_http_requests_total")

        before = set(answered())
        traffic = Traffic(base, key, args.through_client)
        kinds = ["search"] * args.searchers + ["enroll"] * args.enrollers
        with concurrent.futures.ThreadPoolExecutor(len(kinds)) as pool:
            for kind in kinds:
                pool.submit(traffic.run, kind)
            time.sleep(max(0.0, args.kill_at - (time.monotonic() - traffic.started)))
            victim = cluster.hosting(REPLICA)
            killed_at = time.monotonic() - traffic.started
            cluster.kill(victim)
            time.sleep(5)
            cluster.add_worker()
            replacement_at = None
            while time.monotonic() - traffic.started < args.seconds:
                if replacement_at is None and any(pid not in before and n > 0 for pid, n in answered().items()):
                    replacement_at = time.monotonic() - traffic.started
                time.sleep(0.2)
            traffic.stop.set()
        found, doubled = in_gallery(uri, traffic.acknowledged)
    finally:
        cluster.stop()
        server.stop()

    failures = [(t, kind, o) for t, kind, o in traffic.outcomes if not o.startswith("2")]
    per_kind = {kind: {"sent": sum(1 for _, k, _ in traffic.outcomes if k == kind),
                       "failed": sum(1 for _, k, _ in failures if k == kind)} for kind in ("search", "enroll")}
    by_outcome: dict[str, int] = {}
    for _, _, outcome in failures:
        by_outcome[outcome] = by_outcome.get(outcome, 0) + 1
    emit({"bench": "serve_node_fault", "through_client": args.through_client, "bare_proxy": args.bare_proxy,
          "seconds": args.seconds,
          "clients": len(kinds), "killed_at_s": killed_at,
          "requests": per_kind, "search_failed_share": round(per_kind["search"]["failed"] /
                                                           max(1, per_kind["search"]["sent"]), 4),
          "failures_by_outcome": by_outcome,
          "failures_from_kill_s": [round(failures[0][0] - killed_at, 2), round(failures[-1][0] - killed_at, 2)]
          if failures else None,
          "replacement_serves_after_kill_s": round(replacement_at - killed_at, 1) if replacement_at else None,
          "acknowledged_enrollments": len(traffic.acknowledged), "lost": len(traffic.acknowledged) - found,
          "doubled": doubled}, Path(args.out) if args.out else None)


if __name__ == "__main__":
    main()
