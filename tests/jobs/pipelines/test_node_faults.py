"""A worker node's death in the middle of the Ray jobs, on a three-node cluster on this machine (tests/ray_cluster.py:
a head with no CPUs, where nothing but the cluster's services runs, and two one-CPU worker nodes, so the work must
land on the workers). The node that hosts an embedding actor is SIGKILLed as a process group (a machine's death)
as soon as that actor's process exists, and a replacement node joins. Either the job finishes with every face
exactly once (Ray Data's retries, the sink's idempotence), or it fails with one line and a re-run does. Figures
over several rounds: bench/node_faults.py, docs/BENCHMARKS.md."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import gallery_rows, photo_tree
from tests.ray_cluster import AUTH, Cluster

ARCMATCH = [sys.executable, "-m", "jobs.cli"]
EMBEDDING_ACTOR = "EmbedBatch"  # in the process title Ray gives an actor of Ray Data's map_batches(EmbedBatch)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    made = Cluster(tmp_path_factory.mktemp("nodes"))
    try:
        made.add_worker()
        made.add_worker()
        yield made
    finally:
        made.stop()


def run(cluster: Cluster, args: list[str], scratch: Path, *, kill: bool, **env: str) -> tuple[int, str, str, bool]:
    """(exit code, stdout, stderr, whether a node died under it): one command as a driver of the cluster; with
    `kill`, the node hosting an embedding actor dies as soon as the actor's process exists, and a replacement
    joins (while the job goes on)."""
    out, err = scratch / "out.txt", scratch / "err.txt"
    env = {**os.environ, **AUTH, "RAY_ADDRESS": cluster.address, "ARCMATCH_ARCHIVE": "false", **env}
    with out.open("w") as stdout, err.open("w") as stderr:
        job = subprocess.Popen([*ARCMATCH, *args], stdout=stdout, stderr=stderr, text=True, env=env)
        killed = False
        while kill and job.poll() is None:
            victim = cluster.hosting(EMBEDDING_ACTOR)
            if victim is not None:
                cluster.kill(victim)
                killed = True
                cluster.add_worker()
                break
            time.sleep(0.05)
        job.wait(timeout=600)
    return job.returncode, out.read_text(), err.read_text(), killed


def one_line(stderr: str) -> bool:
    lines = [line for line in stderr.splitlines() if line.strip() and not line.startswith(("\r", " "))]
    return "Traceback" not in stderr and len(lines[-1:]) == 1


@pytest.mark.slow
def test_an_ingestion_survives_a_worker_node_death_with_every_face_once(cluster, tmp_path, tiny_model_dir):
    expected = photo_tree(tmp_path / "tree", 150, 2)
    db = tmp_path / "g.db"
    args = ["ingest", str(tmp_path / "tree"), "--model", str(tiny_model_dir), "--milvus", str(db),
            "--gallery", "faces", "--concurrency", "2", "--batch-size", "8", "--index", "FLAT"]
    code, out, err, killed = run(cluster, args, tmp_path, kill=True)
    assert killed, f"no embedding actor was seen on a worker node: {err[-2000:]}\n{cluster.logs()}"
    if code != 0:  # a failure says so in a line, and a re-run finishes what is left
        assert one_line(err), err[-3000:]
        code, out, err, _ = run(cluster, args, tmp_path, kill=False)
    assert code == 0, err[-3000:] + cluster.logs()
    assert "(raylet)" not in out + err  # the job's own lines only, not Ray's
    assert gallery_rows(db, "faces")[:2] == (expected, expected)  # nothing lost, nothing doubled


@pytest.mark.slow
def test_a_reembed_survives_a_worker_node_death_and_switches_with_every_face(cluster, tmp_path, tiny_model_dir,
                                                                              other_model_dir):
    expected = photo_tree(tmp_path / "tree", 100, 2, first=7000)
    db, archive = tmp_path / "g.db", {"ARCMATCH_ARCHIVE": "true", "ARCMATCH_ARCHIVE_URI": str(tmp_path / "archive")}
    made = run(cluster, ["ingest", str(tmp_path / "tree"), "--model", str(tiny_model_dir), "--milvus", str(db),
                         "--gallery", "faces", "--index", "FLAT"], tmp_path, kill=False, **archive)
    assert made[0] == 0, made[2][-3000:]
    args = ["reembed", "--model", str(other_model_dir), "--milvus", str(db), "--gallery", "faces",
            "--batch-size", "8", "--grace", "0", "--index", "FLAT"]
    code, out, err, killed = run(cluster, args, tmp_path, kill=True, **archive)
    assert killed, f"no embedding actor was seen on a worker node: {err[-2000:]}\n{cluster.logs()}"
    if code != 0:
        assert one_line(err), err[-3000:]
        code, out, err, _ = run(cluster, args, tmp_path, kill=False, **archive)
    assert code == 0, err[-3000:] + cluster.logs()
    assert gallery_rows(db, "faces") == (expected, expected, 0.6)  # switched to the new model, every face once
