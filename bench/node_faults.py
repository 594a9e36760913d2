"""A worker node's death in the middle of `arcmatch ingest` on a three-node Ray cluster on this machine: does the
job finish with every face exactly once, or fail with one line and leave a re-run that does?

The cluster: a head with no CPUs of its own (the job's driver runs there, nothing else can) and two worker nodes
with one CPU each, every node a separate `ray start` (its own raylet, object store and workers, in a process
group of its own). The job embeds a tree of synthetic photos with the suite's tiny model into a Milvus Lite file
(Lite takes its writes from the driver, on the head). Each round:

1. a clean run (no fault), for its time;
2. a faulted run into a fresh gallery: the worker node that hosts one of the job's embedding actors (its process,
   found among the node's processes) dies (raylet, workers, object store: every process of the node stopped and
   killed at once, as a machine dies; tests/ray_cluster.py) `--kill-after` seconds after the actor's process
   appeared (one round each); a replacement node joins 5 s later; the cluster's state API then says how often
   each actor of the job was restarted;
3. if the faulted run failed, the same command again (a user's re-run).

After each run the gallery's rows are counted (lost: expected faces not in it; doubled: rows past the distinct
face ids: a face id derives from the photo, so a doubled face would be two rows of one id or one photo under two).

    .venv/bin/python bench/node_faults.py [--people 250 --photos 4] [--kill-after 0,1,2] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import emit  # noqa: E402
from tests.helpers import gallery_rows, photo_tree  # noqa: E402
from tests.ray_cluster import AUTH, Cluster  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "tests" / "fixtures" / "tiny_model"
ARCMATCH = Path(sys.executable).parent / "arcmatch"


def dead_actors(cluster: Cluster) -> dict[str, str]:
    """actor id -> its class and how often it was restarted, for every dead actor of the cluster (its state API),
    asked from a process of its own: Ray reads its token settings once, when it is imported."""
    query = ("import json; from ray.util.state import list_actors as a; print(json.dumps({x.actor_id: "
             "f'{x.class_name}, restarts {x.num_restarts}'[:300] for x in a(address="
             f"{cluster.jobs_api!r}, filters=[('state', '=', 'DEAD')], detail=True, limit=10000, "
             "raise_on_missing_output=False)}))")
    answer = subprocess.run([sys.executable, "-c", query], capture_output=True, text=True, timeout=120,
                            env={**os.environ, **AUTH})
    return json.loads(answer.stdout.strip().splitlines()[-1]) if answer.returncode == 0 else {}


def ingest(cluster: Cluster, tree: Path, db: Path, gallery: str, kill_after_s: float | None) -> dict:
    """One `arcmatch ingest` on the cluster; with `kill_after_s`, a node hosting an embedding actor dies that long
    after the actor came up, and another node joins 5 s later."""
    logs = Path(tempfile.mkdtemp(prefix="nf-logs-"))
    data_log = cluster.temp / "session_latest" / "logs" / "ray-data.log"
    data_log_start = data_log.stat().st_size if data_log.exists() else 0
    command = [str(ARCMATCH), "ingest", str(tree), "--model", str(MODEL), "--milvus", str(db), "--gallery", gallery,
               "--address", cluster.address, "--concurrency", "2", "--batch-size", "16", "--index", "FLAT"]
    dead_before = dead_actors(cluster)
    started = time.perf_counter()
    job = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env={**os.environ, **AUTH, "ARCMATCH_ARCHIVE": "false", "ARCMATCH_LOG_DIR": str(logs)})
    killed_at, killed_node = None, None
    if kill_after_s is not None:  # once an embedding actor's process is up on a worker node, `kill_after_s` later
        victim = None
        while job.poll() is None and victim is None:
            victim = cluster.hosting("EmbedBatch")
            time.sleep(0.05)
        time.sleep(kill_after_s)
        if victim is not None and job.poll() is None:
            killed_node = victim.name
            cluster.kill(victim)
            killed_at = time.perf_counter() - started
            time.sleep(5)
            cluster.add_worker()
    out, err = job.communicate(timeout=900)
    seconds = time.perf_counter() - started
    texts = [f.read_text(errors="replace") for f in logs.glob("*.log")]
    if data_log.exists():  # Ray Data's own log, in the head's session (the driver runs there)
        with data_log.open(errors="replace") as f:
            f.seek(data_log_start)
            texts.append(f.read())
    seen = [line.strip() for text in texts for line in text.splitlines()
            if re.search(r"died|Died|unexpectedly|retry|Retry|lost|Lost|dead|Dead|failed", line)
            and "constructor arguments in the object store" not in line]  # a warning every run prints
    shutil.rmtree(logs, ignore_errors=True)
    last = [line for line in err.strip().splitlines() if line.strip()][-1:] or [""]
    ingest_s = re.search(r"over ([0-9.]+) s", out)
    return {"exit": job.returncode, "seconds": round(seconds, 1), "killed_at_s": killed_at and round(killed_at, 1),
            "ingest_s": float(ingest_s[1]) if ingest_s else None, "fault_lines_in_log": len(seen),
            "killed_node": killed_node,
            "actors": [what for actor, what in dead_actors(cluster).items() if actor not in dead_before],
            "fault_lines": [line[:240] for line in dict.fromkeys(seen)][:4],
            "error_line": last[0][:300] if job.returncode else "",
            "report": out.strip().splitlines()[-2:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--people", type=int, default=250)
    parser.add_argument("--photos", type=int, default=4)
    parser.add_argument("--kill-after", default="0,1,2",
                        help="seconds after an embedding actor is up that its node dies: one round each")
    parser.add_argument("--out")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="node-faults-"))
    expected = photo_tree(scratch / "tree", args.people, args.photos)
    cluster = Cluster(scratch, workers=2)
    rounds = []
    try:
        for n, delay in enumerate(float(v) for v in args.kill_after.split(",")):
            clean = ingest(cluster, scratch / "tree", scratch / f"clean{n}.db", "faces", None)
            clean["rows"], clean["distinct"], _ = gallery_rows(scratch / f"clean{n}.db", "faces")
            faulted = ingest(cluster, scratch / "tree", scratch / f"fault{n}.db", "faces", delay)
            faulted["rows"], faulted["distinct"], _ = gallery_rows(scratch / f"fault{n}.db", "faces")
            rerun = None
            if faulted["exit"] != 0 or faulted["distinct"] != expected:
                rerun = ingest(cluster, scratch / "tree", scratch / f"fault{n}.db", "faces", None)
                rerun["rows"], rerun["distinct"], _ = gallery_rows(scratch / f"fault{n}.db", "faces")
            final = rerun or faulted
            rounds.append({"kill_after_s": delay, "clean": clean, "faulted": faulted, "rerun": rerun,
                           "lost": expected - final["distinct"], "doubled": final["rows"] - final["distinct"]})
            print(rounds[-1], flush=True)
    finally:
        cluster.stop()
    emit({"bench": "node_faults", "expected_faces": expected,
          "clean_s": sorted(r["clean"]["seconds"] for r in rounds),
          "faulted_finished": sum(r["faulted"]["exit"] in (0, 3) for r in rounds),
          "lost": [r["lost"] for r in rounds], "doubled": [r["doubled"] for r in rounds], "rounds": rounds},
         Path(args.out) if args.out else None)
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
