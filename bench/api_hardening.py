"""What the service's hardening costs and what it buys, measured side by side in one run.

    python bench/api_hardening.py costs  [--rounds 300] [--repeats 5]   # audit log, readiness probe, erasure
    python bench/api_hardening.py faults [--clients 16] [--session-ttl S] # Milvus server stopped and SIGKILLed

costs: search p50/p99 over HTTP with the audit log of every search on and off (two apps on one Milvus Lite file's
copy each, requests interleaved A/B/A/B so both see the same machine), a readiness probe answered from its one-second
cache vs one that asks the store, and on a Milvus server a delete as it was (no confirmation) vs a delete that
returns once a Strong read confirms it, each with how many searches right after it still found the deleted face.

faults: 16 clients enroll and search against `arcmatch serve`'s app on a Milvus server; the server is stopped, then
restarted, then SIGKILLed, then restarted. Reports status codes per phase, seconds from the server answering again
to the first good search, acknowledged enrollments lost (each 201's face must exist at the end), and enrollments
that failed but were written anyway (a retry of those is harmless: enrollment is keyed by identity and photo).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import emit, percentiles, start_milvus_server  # noqa: E402
from indexer.ids import face_id  # noqa: E402
from jobs.api.app import create_app  # noqa: E402
from jobs.api.keys import new_key  # noqa: E402
from jobs.api.local import serve_in_thread  # noqa: E402
from jobs.settings import Settings  # noqa: E402
from tests.helpers import pin_port, png  # noqa: E402

KEY, ENTRY = new_key("bench", ["read", "write"])
H = {"X-API-Key": KEY}


def tiny_model(directory: Path) -> Path:
    """The tests' tiny embedder (16-d): the costs here are the service's, not the model's."""
    import torch

    from embedder.checkpoint import Calibration, save_embedder
    from embedder.model import FaceEmbedder
    from embedder.spec import ModelSpec

    torch.manual_seed(0)
    save_embedder(FaceEmbedder(ModelSpec(backbone="test_resnet", embedding_size=16, input_size=(32, 32))), directory)
    Calibration(threshold=0.5, target_far=1e-3, measured_far=1e-3, tar=0.9, pairs=100).save(directory)
    return directory


def settings(work: Path, model: Path, uri: str, **extra) -> Settings:
    return Settings(model=model, api_keys=ENTRY, milvus_uri=uri, gallery="bench", **extra)


def audit_cost(work: Path, model: Path, rounds: int, repeats: int) -> dict:
    apps = {}
    for name, on in (("audit_off", False), ("audit_on", True)):
        apps[name] = settings(work, model, str(work / f"{name}.db"), audit_dir=work / f"audit-{name}",
                              audit_searches=on)
    results: dict[str, list] = {name: [] for name in apps}
    with serve_in_thread(create_app(apps["audit_off"])) as off, serve_in_thread(create_app(apps["audit_on"])) as on:
        clients = {"audit_off": httpx.Client(base_url=off, headers=H), "audit_on": httpx.Client(base_url=on, headers=H)}
        for client in clients.values():
            for n in range(50):
                client.post(f"/v1/identities/p{n}/faces", files=[("images", ("a.png", png(n)))])
        photo = png(3, 1)
        for _ in range(repeats):
            for name in ("audit_off", "audit_on"):  # interleaved: each repeat runs both back to back
                seconds = []
                for _ in range(rounds):
                    started = time.perf_counter()
                    assert clients[name].post("/v1/search", files={"image": ("p.png", photo)}).status_code == 200
                    seconds.append(time.perf_counter() - started)
                results[name].append(percentiles(seconds))
        records = sum(1 for p in (work / "audit-audit_on").glob("*.jsonl") for _ in p.open())
    out = {name: {k: statistics.median(r[k] for r in runs) for k in ("p50_ms", "p99_ms")}
           for name, runs in results.items()}
    out["p50_ratio_on_off"] = out["audit_on"]["p50_ms"] / out["audit_off"]["p50_ms"]
    out["p99_ratio_on_off"] = out["audit_on"]["p99_ms"] / out["audit_off"]["p99_ms"]
    out["records_written"] = records
    return out


def readiness_cost(model: Path, uri: str, work: Path, rounds: int) -> dict:
    from jobs.service import IdentityService

    service = IdentityService.open(settings(work, model, uri), create=True)
    cached, asked = [], []
    for _ in range(rounds):
        started = time.perf_counter()
        service.ready()
        cached.append(time.perf_counter() - started)
        started = time.perf_counter()
        service.index.check_ready()
        asked.append(time.perf_counter() - started)
    service.close()
    return {"ready_cached": percentiles(cached), "store_check": percentiles(asked)}


def erasure_cost(uri: str, rounds: int) -> dict:
    from indexer.store import CollectionInfo, FaceIndex, FaceRow, connect

    index = FaceIndex(connect(uri), "bench_erasure", consistency="Session")
    index.ensure(CollectionInfo("bench", 16, 0.5))
    rng = np.random.default_rng(0)
    base = rng.normal(size=(500, 16))
    index.upsert([FaceRow(f"s{i}", f"p{i}", v / np.linalg.norm(v), i + 1) for i, v in enumerate(base)])
    out = {}
    # as before this change; the delete as now (delete, then a Strong read); the whole DELETE of one face as the API
    # does it (a read that the face belongs to the identity, then the confirmed delete)
    for n, mode in enumerate(("unconfirmed", "confirmed", "delete_face")):
        stale, seconds = 0, []
        for r in range(rounds):
            vector = rng.normal(size=16)
            vector /= np.linalg.norm(vector)
            face = 100_000 + r + n * rounds
            index.upsert([FaceRow(f"x{face}", "victim", vector, face)])
            index.search(vector[None], k=3)
            started = time.perf_counter()
            if mode == "unconfirmed":
                index.client.delete(index.collection, ids=[face])
            elif mode == "confirmed":
                index._delete([face])
            else:
                index.delete_face("victim", face)
            seconds.append(time.perf_counter() - started)
            stale += any(h.face_id == face for h in index.search(vector[None], k=3)[0])
        out[mode] = {**percentiles(seconds), "stale_searches": f"{stale}/{rounds}"}
    index.client.drop_collection(index.collection)
    return out


def costs(args) -> dict:
    work = Path(tempfile.mkdtemp(prefix="arcmatch-hardening-"))
    model = tiny_model(work / "model")
    result = {"audit_log_search_over_http_lite": audit_cost(work, model, args.rounds, args.repeats),
              "readiness_lite": readiness_cost(model, str(work / "ready.db"), work, args.rounds)}
    server, uri = start_milvus_server(work / "milvus")
    try:
        result["readiness_server"] = readiness_cost(model, uri, work, args.rounds)
        result["erasure_server"] = erasure_cost(uri, min(args.rounds, 100))
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return result


class Load:
    """`clients` threads, each enrolling and searching in turn, recording (time, kind, status, face ids)."""

    def __init__(self, base: str, clients: int) -> None:
        self.base, self.clients, self.stop = base, clients, threading.Event()
        self.log: list[tuple[float, str, int, list[str], str]] = []
        self.lock = threading.Lock()

    def run_client(self, n: int) -> None:
        with httpx.Client(base_url=self.base, headers=H, timeout=60) as client:
            i = 0
            while not self.stop.is_set():
                i += 1
                identity = f"c{n}"
                photo = png(1000 * n + i)
                try:
                    if i % 2:
                        answer = client.post(f"/v1/identities/{identity}/faces", files=[("images", ("a.png", photo))])
                        faces = answer.json().get("face_ids", []) if answer.status_code == 201 else []
                        kind = "enroll"
                    else:
                        answer = client.post("/v1/search", files={"image": ("p.png", png(1000 * n + i - 1))})
                        faces, kind = [], "search"
                    status = answer.status_code
                except httpx.HTTPError:
                    status, faces, kind = 0, [], "enroll" if i % 2 else "search"
                with self.lock:
                    self.log.append((time.time(), kind, status, faces, f"{identity}:{1000 * n + i}"))

    def __enter__(self):
        self.threads = [threading.Thread(target=self.run_client, args=(n,), daemon=True) for n in range(self.clients)]
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=120)


def faults(args) -> dict:
    work = Path(tempfile.mkdtemp(prefix="arcmatch-faults-"))
    model = tiny_model(work / "model")
    server, uri = start_milvus_server(work / "milvus", **({"common.session.ttl": args.session_ttl}
                                                          if args.session_ttl else {}))
    pin_port(server)  # a restart comes back on the same port
    phases: list[tuple[str, float]] = []
    recovery = {}
    try:
        app_settings = settings(work, model, uri, audit_dir=work / "audit")
        with serve_in_thread(create_app(app_settings)) as base, Load(base, args.clients) as load:
            probe = httpx.Client(base_url=base, headers=H, timeout=60)

            def api_searches() -> bool:
                return probe.post("/v1/search", files={"image": ("p.png", png(7))}).status_code == 200

            def server_searches() -> bool:  # a brand-new raw client: the server itself serves again
                from pymilvus import MilvusClient

                try:
                    client = MilvusClient(uri=uri, timeout=2, dedicated=True)
                    try:
                        client.search("bench", data=[[1.0] + [0.0] * 15], limit=1, timeout=2)
                        return True
                    finally:
                        client.close()
                except Exception:  # noqa: BLE001  (any failure means: not yet)
                    return False

            def seconds_until(*checks) -> list[float]:  # polled side by side, from the same start
                started, found = time.perf_counter(), {}

                def poll(n, check):
                    while not check():
                        time.sleep(0.05)
                    found[n] = time.perf_counter() - started

                threads = [threading.Thread(target=poll, args=(n, c), daemon=True) for n, c in enumerate(checks)]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
                return [round(found[n], 2) for n in range(len(checks))]

            phases.append(("healthy", time.time()))
            time.sleep(args.phase_s)
            for outage in ("stopped", "killed"):
                phases.append((outage, time.time()))
                if outage == "stopped":
                    server.stop()
                else:
                    os.kill(server.server_proc.pid, signal.SIGKILL)
                    server.server_proc.wait()
                    server.stop()
                time.sleep(args.phase_s)
                ready_during = probe.get("/v1/ready").status_code
                server.start()
                phases.append((f"restarted after {outage}", time.time()))
                server_s, api_s = seconds_until(server_searches, api_searches)
                recovery[outage] = {"server_searches_after_start_s": server_s, "api_searches_after_start_s": api_s,
                                    "api_after_server_s": round(api_s - server_s, 2),
                                    "ready_during_outage": ready_during}
                time.sleep(args.phase_s)
            phases.append(("end", time.time()))
        # every acknowledged enrollment must be there; failed ones may or may not be (a retry is safe either way)
        from indexer.store import FaceIndex, connect

        index = FaceIndex(connect(uri), "bench")
        acked = {f for _, kind, status, faces, _ in load.log if kind == "enroll" and status == 201 for f in faces}
        present = set(index.vectors(sorted(int(f) for f in acked)))
        failed = [photo for _, kind, status, _, photo in load.log if kind == "enroll" and status != 201]
        def photo_face(photo: str) -> int:  # the id enrollment gives a photo (IdentityService.enroll)
            identity, seed = photo.split(":")
            return face_id(f"{identity}\x00{hashlib.sha256(png(int(seed))).hexdigest()}")

        written_anyway = len(index.vectors([photo_face(p) for p in failed])) if failed else 0
        by_phase = {}
        for (name, start), (_, end) in zip(phases, phases[1:], strict=False):
            codes = Counter(f"{kind} {status}" for t, kind, status, _, _ in load.log if start <= t < end)
            by_phase[name] = dict(sorted(codes.items()))
        return {"clients": args.clients, "phase_s": args.phase_s, "session_ttl_s": args.session_ttl or 30,
                "status_by_phase": by_phase,
                "recovery": recovery, "acknowledged_enrollments": len(acked),
                "acknowledged_lost": len(acked - {str(f) for f in present}),
                "failed_enrollments": len(failed), "failed_but_written": written_anyway}
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("costs")
    p.add_argument("--rounds", type=int, default=300)
    p.add_argument("--repeats", type=int, default=5)
    p = sub.add_parser("faults")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--phase-s", type=float, default=10.0)
    p.add_argument("--session-ttl", type=int, help="the server's common.session.ttl in seconds (its default: 30)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    emit(costs(args) if args.what == "costs" else faults(args), args.out)


if __name__ == "__main__":
    main()
