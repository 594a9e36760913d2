"""A worker node's death in the middle of `arcmatch ingest` on a three-node Ray cluster on this machine: does the
job finish with every face exactly once, or fail with one line and leave a re-run that does?

The cluster: a head with no CPUs of its own (the job's driver runs there, nothing else can) and two worker nodes
with one CPU each, every node a separate `ray start` (its own raylet, object store and workers, in a process
group of its own). The job embeds a tree of synthetic photos with the suite's tiny model into a Milvus Lite file
(Lite takes its writes from the driver, on the head). Each round:

1. a clean run (no fault): its time sets when the fault comes;
2. a faulted run into a fresh gallery: one worker node is SIGKILLed (raylet, workers, object store: the whole
   process group, as a machine's death) at `--kill-at` of the clean run's time; a replacement node joins 5 s later;
3. if the faulted run failed, the same command again (a user's re-run).

After each run the gallery's rows are counted (lost: expected faces not in it; doubled: rows past the distinct
face ids: a face id derives from the photo, so a doubled face would be two rows of one id or one photo under two).

    .venv/bin/python bench/node_faults.py [--people 150 --photos 4] [--rounds 3] [--kill-at 0.4] [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import emit  # noqa: E402
from tests.helpers import listen_port  # noqa: E402
from trainer.synthetic import make_identity, render  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "tests" / "fixtures" / "tiny_model"
RAY = Path(sys.executable).parent / "ray"
ARCMATCH = Path(sys.executable).parent / "arcmatch"


class Cluster:
    """A head and worker nodes, each `ray start --block` in a process group of its own."""

    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch
        self.port = listen_port()
        self.address = f"127.0.0.1:{self.port}"
        self.temp = Path(tempfile.mkdtemp(prefix="nf-"))  # short: Ray's socket paths must fit AF_UNIX
        self.head = self._start(["--head", f"--port={self.port}", "--num-cpus=0", "--include-dashboard=false"],
                                "head")
        self.workers: list[subprocess.Popen] = []

    def _start(self, args: list[str], name: str) -> subprocess.Popen:
        log = (self.scratch / f"{name}.log").open("w")
        node = subprocess.Popen([str(RAY), "start", "--block", "--node-ip-address=127.0.0.1", *args] +
                                ([f"--temp-dir={self.temp}"] if "--head" in args else []),
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 120
        while "Ray runtime started" not in (self.scratch / f"{name}.log").read_text(errors="replace"):
            if node.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"{name} did not start: {(self.scratch / f'{name}.log').read_text()[-2000:]}")
            time.sleep(0.5)
        return node

    def add_worker(self) -> subprocess.Popen:
        worker = self._start([f"--address={self.address}", "--num-cpus=1"], f"worker{len(self.workers)}")
        self.workers.append(worker)
        return worker

    def kill(self, node: subprocess.Popen) -> None:
        """A machine's death: SIGKILL to the node's whole process group (raylet, its workers, its store)."""
        os.killpg(node.pid, signal.SIGKILL)
        node.wait()
        self.workers.remove(node)

    def stop(self) -> None:
        for node in [*self.workers, self.head]:
            try:
                os.killpg(node.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.temp, ignore_errors=True)


def photo_tree(root: Path, people: int, photos: int) -> int:
    for person in range(people):
        folder = root / f"person {person:04d}"
        folder.mkdir(parents=True)
        identity = make_identity(0, 5000 + person)
        for n in range(photos):
            image = render(identity, np.random.default_rng([person, n]), 32, variation=0.2)
            Image.fromarray(image).save(folder / f"{n}.png")
    return people * photos


def ingest(cluster: Cluster, tree: Path, db: Path, gallery: str, kill_after_s: float | None) -> dict:
    """One `arcmatch ingest` on the cluster; with `kill_after_s`, a worker node dies then, another joins 5 s later."""
    command = [str(ARCMATCH), "ingest", str(tree), "--model", str(MODEL), "--milvus", str(db), "--gallery", gallery,
               "--address", cluster.address, "--concurrency", "2", "--batch-size", "16", "--index", "FLAT"]
    started = time.perf_counter()
    job = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env={**os.environ, "ARCMATCH_ARCHIVE": "false"})
    killed_at = None
    if kill_after_s is not None:
        try:
            job.wait(timeout=kill_after_s)
        except subprocess.TimeoutExpired:
            cluster.kill(cluster.workers[0])
            killed_at = time.perf_counter() - started
            time.sleep(5)
            cluster.add_worker()
    out, err = job.communicate(timeout=900)
    seconds = time.perf_counter() - started
    last = [line for line in err.strip().splitlines() if line.strip()][-1:] or [""]
    return {"exit": job.returncode, "seconds": round(seconds, 1), "killed_at_s": killed_at and round(killed_at, 1),
            "error_line": last[0][:300] if job.returncode else "", "report": out.strip().splitlines()[-2:]}


def count(db: Path, gallery: str) -> tuple[int, int]:
    """(rows, distinct face ids) of the gallery."""
    from indexer.galleries import Galleries
    from indexer.store import FaceIndex, connect

    client = connect(str(db))
    try:
        serving = Galleries(client, gallery).serving()
        if serving is None:
            return 0, 0
        index = FaceIndex(client, serving)
        ids = [face for face, _ in index.labelled_faces()]
        return len(ids), len(set(ids))
    finally:
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--people", type=int, default=150)
    parser.add_argument("--photos", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--kill-at", type=float, default=0.4, help="share of the clean run's time")
    parser.add_argument("--out")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="node-faults-"))
    expected = photo_tree(scratch / "tree", args.people, args.photos)
    cluster = Cluster(scratch)
    rounds = []
    try:
        cluster.add_worker(), cluster.add_worker()
        for n in range(args.rounds):
            clean = ingest(cluster, scratch / "tree", scratch / f"clean{n}.db", "faces", None)
            clean["rows"], clean["distinct"] = count(scratch / f"clean{n}.db", "faces")
            faulted = ingest(cluster, scratch / "tree", scratch / f"fault{n}.db", "faces",
                             clean["seconds"] * args.kill_at)
            faulted["rows"], faulted["distinct"] = count(scratch / f"fault{n}.db", "faces")
            rerun = None
            if faulted["exit"] != 0 or faulted["distinct"] != expected:
                rerun = ingest(cluster, scratch / "tree", scratch / f"fault{n}.db", "faces", None)
                rerun["rows"], rerun["distinct"] = count(scratch / f"fault{n}.db", "faces")
            final = rerun or faulted
            rounds.append({"clean": clean, "faulted": faulted, "rerun": rerun,
                           "lost": expected - final["distinct"], "doubled": final["rows"] - final["distinct"]})
            print(rounds[-1], flush=True)
    finally:
        cluster.stop()
    emit({"bench": "node_faults", "expected_faces": expected, "kill_at": args.kill_at,
          "clean_s": sorted(r["clean"]["seconds"] for r in rounds),
          "faulted_finished": sum(r["faulted"]["exit"] in (0, 3) for r in rounds),
          "lost": [r["lost"] for r in rounds], "doubled": [r["doubled"] for r in rounds], "rounds": rounds},
         Path(args.out) if args.out else None)
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
