"""Checkpoints carry the whole training state: a run resumes on other workers. (A worker's death mid-run, its whole
node with it, restarting from the last checkpoint: tests/jobs/pipelines/test_node_faults.py.)"""

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
def test_resume_on_another_number_of_workers(ray_local, tmp_path):
    write_dataset(tmp_path / "data", range(6), 12, size=32)
    first = fit(config(tmp_path / "data", epochs=1), tmp_path / "m1", storage=tmp_path / "runs", name="run")
    assert [h["epoch"] for h in first.history] == [1]
    second = fit(config(tmp_path / "data", epochs=3, workers=2), tmp_path / "m2", storage=tmp_path / "runs",
                 name="run")
    assert [h["epoch"] for h in second.history] == [1, 2, 3]  # epoch 1 came from the checkpoint
    assert second.history[0] == first.history[0]
