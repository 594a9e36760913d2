"""A worker node's death in the middle of the Ray jobs, on a three-node cluster on this machine (tests/ray_cluster.py:
a head with no CPUs, where nothing but the cluster's services runs, and two one-CPU worker nodes, so the work must
land on the workers). The node that hosts an embedding actor is SIGKILLed as a process group (a machine's death)
as soon as that actor's process exists, and a replacement node joins. Either the job finishes with every face
exactly once (Ray Data's retries, the sink's idempotence), or it fails with one line and a re-run does. Figures
over several rounds: bench/node_faults.py, docs/BENCHMARKS.md."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import gallery_rows, people, photo_tree
from tests.ray_cluster import AUTH, Cluster, Node, cluster_turn

ARCMATCH = [sys.executable, "-m", "jobs.cli"]
EMBEDDING_ACTOR = "EmbedBatch"  # in the process title Ray gives an actor of Ray Data's map_batches(EmbedBatch)
SEARCH_ACTOR = "NeighbourSearch"  # `arcmatch cluster`'s, the same way


@pytest.fixture
def cluster(ray_cluster):
    """The run's cluster (tests/jobs/pipelines/conftest.py), with two worker nodes again after a test killed one."""
    while len(ray_cluster.workers) < 2:
        ray_cluster.add_worker()
    return ray_cluster


def run(cluster: Cluster, args: list[str], scratch: Path, *, kill: bool,
        victim: Callable[[], Node | None] | None = None, replace: bool = True,
        **env: str) -> tuple[int, str, str, bool]:
    """(exit code, stdout, stderr, whether a node died under it): one command as a driver of the cluster; with
    `kill`, the node `victim` names (by default one hosting an embedding actor) dies as soon as it names one, and
    with `replace` a replacement joins (while the job goes on)."""
    victim = victim or (lambda: cluster.hosting(EMBEDDING_ACTOR))
    out, err = scratch / "out.txt", scratch / "err.txt"
    env = {**os.environ, **AUTH, "RAY_ADDRESS": cluster.address, "ARCMATCH_ARCHIVE": "false", **env}
    with out.open("w") as stdout, err.open("w") as stderr:
        job = subprocess.Popen([*ARCMATCH, *args], stdout=stdout, stderr=stderr, text=True, env=env)
        killed = False
        while kill and job.poll() is None:
            doomed = victim()
            if doomed is not None:
                cluster.kill(doomed)
                killed = True
                if replace:
                    cluster.add_worker()
                break
            time.sleep(0.2)  # each look reads every process's /proc entry: a few ms, hundreds of processes
        job.wait(timeout=600)
    return job.returncode, out.read_text(), err.read_text(), killed


def finishes_through_a_death(cluster: Cluster, args: list[str], scratch: Path, what: str,
                             victim: Callable[[], Node | None] | None = None, replace: bool = True,
                             **env: str) -> tuple[str, str]:
    """(stdout, stderr) of a command a node died under, as a driver of the cluster: it finished, or it failed in
    one line and the same command again finished what was left."""
    code, out, err, killed = run(cluster, args, scratch, kill=True, victim=victim, replace=replace, **env)
    assert killed, f"{what}: the node to kill was never seen: {err[-2000:]}\n{cluster.logs()}"
    if code != 0:  # a failure says so in a line, and a re-run finishes what is left
        assert one_line(err), err[-3000:]
        code, out, err, _ = run(cluster, args, scratch, kill=False, **env)
    assert code == 0, f"{what}: {err[-3000:]}{cluster.logs()}"
    return out, err


def rows_apart(db: Path) -> list:
    """gallery_rows of gallery "faces", read by a process of its own: Milvus Lite's file stays held by the process
    that opened it, and the next job must open it."""
    code = f"import json; from tests.helpers import gallery_rows; print(json.dumps(gallery_rows({str(db)!r}, 'faces')))"
    answer = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            cwd=Path(__file__).resolve().parents[3])
    assert answer.returncode == 0, answer.stderr[-2000:]
    return json.loads(answer.stdout.strip().splitlines()[-1])


def one_line(stderr: str) -> bool:
    lines = [line for line in stderr.splitlines() if line.strip() and not line.startswith(("\r", " "))]
    return "Traceback" not in stderr and len(lines[-1:]) == 1


@pytest.mark.slow
def test_a_submitted_ingestion_then_a_reembed_survive_a_worker_node_death(cluster, tmp_path, tiny_model_dir,
                                                                          other_model_dir):
    """`arcmatch submit ingest` through the head's Jobs API (its driver on the head, its work on the workers), then
    `arcmatch reembed` as a driver of the cluster, a node dying under each. Each finishes with every face once, or
    fails (in one line; for the submitted job, exit 1 and `arcmatch jobs status` FAILED) and a re-run finishes; the
    submitted job's exit code and status agree, and what they say is so."""
    expected = photo_tree(tmp_path / "tree", 100, 2)
    db = tmp_path / "g.db"
    env = {"ARCMATCH_ARCHIVE": "true", "ARCMATCH_ARCHIVE_URI": str(tmp_path / "archive")}
    submitted = {**env, "RAY_ADDRESS": cluster.jobs_api}  # the ARCMATCH_* settings travel with the job
    ingest = ["submit", "ingest", str(tmp_path / "tree"), "--model", str(tiny_model_dir), "--milvus", str(db),
              "--gallery", "faces", "--concurrency", "2", "--batch-size", "8", "--index", "FLAT"]
    code, out, err, killed = run(cluster, ingest, tmp_path, kill=True, **submitted)
    assert killed, f"ingest: no embedding actor was seen on a worker node: {out[-2000:]}{err[-2000:]}"
    job_id = next(line.split()[1].rstrip(":") for line in out.splitlines() if line.startswith("submitted "))
    status = run(cluster, ["jobs", "status", job_id], tmp_path, kill=False, **submitted)[1].strip()
    assert (code, status) in ((0, "SUCCEEDED"), (1, "FAILED")), out[-3000:] + err[-2000:]
    if code != 0:  # it says it failed, with the job's own error and no traceback, and a re-run finishes
        assert "Traceback" not in out + err, out[-3000:]
        code, out, err, _ = run(cluster, ingest, tmp_path, kill=False, **submitted)
        assert code == 0, out[-3000:] + err[-2000:] + cluster.logs()
    assert rows_apart(db)[:2] == [expected, expected]  # nothing lost, nothing doubled

    reembed = ["reembed", "--model", str(other_model_dir), "--milvus", str(db), "--gallery", "faces",
               "--batch-size", "8", "--grace", "0", "--index", "FLAT", "--errors", str(tmp_path / "reembed.csv")]
    out, err = finishes_through_a_death(cluster, reembed, tmp_path, "reembed", **env)
    assert "(raylet)" not in out + err  # the job's own lines only, not Ray's
    # nothing lost, nothing doubled, and the gallery serves from the new model's collection
    assert gallery_rows(db, "faces") == (expected, expected, 0.6)


@pytest.mark.slow
def test_training_on_two_nodes_goes_on_from_its_checkpoint_when_one_dies(cluster, tmp_path):
    """`arcmatch train --workers 2`, a worker on each node; once a checkpoint is written, the node of a training
    worker dies: Ray Train (FailureConfig) starts the workers again from that checkpoint when the replacement node
    is there, and the run ends with the model it was asked for."""
    from embedder.checkpoint import load_embedder
    from trainer.synthetic import write_dataset

    write_dataset(tmp_path / "data", range(4), 8, size=32)  # two steps an epoch on each worker
    runs, out = tmp_path / "runs", tmp_path / "model"
    args = ["train", "--data", str(tmp_path / "data"), "--out", str(out), "--backbone", "test_resnet",
            "--embedding-size", "16", "--input-size", "32", "--head", "arcface", "--scale", "16", "--epochs", "3",
            "--batch-size", "8", "--workers", "2", "--cpus-per-worker", "1", "--checkpoint-every", "2",
            "--log-every", "0", "--storage", str(runs), "--name", "nodes"]

    def checkpointed_worker() -> Node | None:
        if not any(p.is_dir() and p.name.startswith("checkpoint") for p in runs.rglob("checkpoint*")):
            return None
        return cluster.hosting("RayTrainWorker")

    code, out_text, err, killed = run(cluster, args, tmp_path, kill=True, victim=checkpointed_worker)
    assert killed, f"no checkpoint, or no training worker on a worker node: {err[-2000:]}"
    assert code == 0, err[-3000:] + cluster.logs()
    model = load_embedder(out)
    assert (model.spec.backbone, model.spec.embedding_size) == ("test_resnet", 16)


@pytest.mark.slow
@pytest.mark.stores("server")
def test_a_clustering_survives_a_worker_node_death(milvus_uri, new_collection, tmp_path):
    """`arcmatch cluster` on the Milvus server, its neighbour searches in Ray Data actors on the worker nodes
    (`--ray-from 0`: however few the faces), the node of a search actor dying and none joining: the run either
    finishes with every unlabelled face in exactly one cluster and the people found, or fails in one line and a
    re-run does. Its own cluster: the Milvus server's tests run in a test process of their own
    (tests/conftest.py)."""
    from indexer.cluster_store import ClusterStore
    from indexer.clustering import bcubed
    from indexer.ids import UNLABELLED
    from indexer.store import FaceRow

    gallery = new_collection(32, 0.6)
    crowd = people(250, 4, spread=0.4, dim=32)
    gallery.upsert([FaceRow(r.source, UNLABELLED, r.vector, r.face_id) for r in crowd])
    gallery.flush()
    archive = tmp_path / "archive"
    env = {"ARCMATCH_ARCHIVE": "true", "ARCMATCH_ARCHIVE_URI": str(archive)}
    args = ["cluster", "--milvus", milvus_uri, "--gallery", gallery.collection, "--k", "8", "--ray-from", "0"]
    with cluster_turn():  # after the shared cluster's tests, never beside them
        nodes = Cluster(tmp_path / "nodes", workers=2, quick_checks=True, dashboard=False)
        try:
            # no replacement: the other node takes the lost work (its search actor takes half of its CPU), and a
            # node started while this process's neighbours load both cores has timed out registering
            out, err = finishes_through_a_death(nodes, args, tmp_path, "cluster",
                                                victim=lambda: nodes.hosting(SEARCH_ACTOR), replace=False, **env)
        finally:
            nodes.stop()
    assert "(raylet)" not in out + err
    latest = ClusterStore(str(archive), gallery.collection, gallery.collection).latest()
    faces = latest.face_ids.tolist()
    assert sorted(faces) == sorted(r.face_id for r in crowd)  # each face once
    truth = {r.face_id: r.identity for r in crowd}
    assert bcubed([truth[f] for f in faces], latest.cluster_of)[:2] == (1.0, 1.0)
