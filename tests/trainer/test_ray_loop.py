"""The Ray Train job on a real local Ray, with a tiny backbone and a few synthetic identities."""

import json

import numpy as np
import pytest

from embedder.checkpoint import load_embedder
from embedder.spec import ModelSpec
from trainer.config import TrainConfig
from trainer.ray_loop import HISTORY_FILE, _epoch_indices, fit
from trainer.synthetic import write_dataset


def test_every_worker_gets_the_same_number_of_full_batches():
    shards = [_epoch_indices(103, epoch=2, seed=0, rank=r, world=3, batch=8) for r in range(3)]
    assert {len(s) for s in shards} == {32}
    flat = np.concatenate(shards)
    assert len(np.unique(flat)) == len(flat)  # no image on two workers in one epoch


@pytest.mark.slow
def test_fit_trains_and_exports_an_embedder(ray_local, tmp_path):
    write_dataset(tmp_path / "data", range(6), 6, size=32)
    (tmp_path / "data" / "person_00000" / "broken.png").write_bytes(b"\x89PNG not really")
    spec = ModelSpec("test_resnet", embedding_size=16, input_size=(32, 32))
    config = TrainConfig(data=str(tmp_path / "data"), spec=spec, head="arcface", scale=16.0, margins={"m2": 0.2},
                         epochs=2, batch_size=8, optimizer="adamw", lr=3e-3, cpus_per_worker=1, log_every=2)
    result = fit(config, tmp_path / "model", storage=tmp_path / "runs", name="t")
    assert [h["epoch"] for h in result.history] == [1, 2]
    assert all(np.isfinite(h["loss"]) for h in result.history)
    assert result.skipped and result.skipped[0][0].endswith("broken.png")
    model = load_embedder(tmp_path / "model")
    assert model.spec.version.startswith("test_resnet-d16-")
    saved = sorted(p.name for p in (tmp_path / "runs" / "t").rglob(HISTORY_FILE))
    assert len(saved) <= 2  # keep-last-2 checkpoints
    assert json.loads(next((tmp_path / "runs" / "t").rglob(HISTORY_FILE)).read_text())["classes"] == 6
