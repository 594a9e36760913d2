"""Checkpoints carry the whole training state: a killed worker restarts from one, a run resumes on other workers."""

import os
import signal
import threading
import time

import pytest

from embedder.spec import ModelSpec
from trainer.config import TrainConfig
from trainer.ray_loop import fit
from trainer.synthetic import write_dataset

SPEC = ModelSpec("test_resnet", embedding_size=16, input_size=(32, 32))


def config(data, **overrides):
    base = {"data": str(data), "spec": SPEC, "head": "arcface", "scale": 16.0, "margins": {"m2": 0.2},
            "epochs": 3, "batch_size": 8, "optimizer": "adamw", "lr": 3e-3, "cpus_per_worker": 1, "log_every": 0}
    return TrainConfig(**{**base, **overrides})


@pytest.mark.slow
def test_a_killed_worker_restarts_from_the_last_checkpoint(ray_local, tmp_path):
    from ray.util.state import list_actors

    write_dataset(tmp_path / "data", range(6), 12, size=32)
    run = tmp_path / "runs" / "killed"
    killed = []
    address = ray_local.get_runtime_context().gcs_address

    def kill_when_checkpointed():
        deadline = time.time() + 120
        while time.time() < deadline and not killed:
            if run.is_dir() and any(p.name.startswith("checkpoint") for p in run.rglob("*") if p.is_dir()):
                workers = list_actors(address=address,  # this test's Ray, even when another runs on the machine
                                      filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")])
                if workers:
                    try:
                        os.kill(workers[0].pid, signal.SIGKILL)
                    except ProcessLookupError:  # it ended between the listing and the kill: look again
                        continue
                    killed.append(workers[0].pid)
            time.sleep(0.2)

    watcher = threading.Thread(target=kill_when_checkpointed)
    watcher.start()
    result = fit(config(tmp_path / "data", checkpoint_every=2), tmp_path / "model", storage=tmp_path / "runs",
                 name="killed")
    watcher.join()
    assert killed, "the worker was never killed: no checkpoint appeared"
    assert [h["epoch"] for h in result.history] == [1, 2, 3]  # the run completed after the restart


@pytest.mark.slow
def test_resume_on_another_number_of_workers(ray_local, tmp_path):
    write_dataset(tmp_path / "data", range(6), 12, size=32)
    first = fit(config(tmp_path / "data", epochs=1), tmp_path / "m1", storage=tmp_path / "runs", name="run")
    assert [h["epoch"] for h in first.history] == [1]
    second = fit(config(tmp_path / "data", epochs=3, workers=2), tmp_path / "m2", storage=tmp_path / "runs",
                 name="run")
    assert [h["epoch"] for h in second.history] == [1, 2, 3]  # epoch 1 came from the checkpoint
    assert second.history[0] == first.history[0]
