"""The Ray Train job on a real local Ray, with a tiny backbone and a few synthetic identities."""

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch

from common.errors import BadInput
from embedder.checkpoint import load_embedder
from embedder.sources import list_images
from embedder.spec import ModelSpec
from trainer.config import TrainConfig
from trainer.ray_loop import HISTORY_FILE, fit
from trainer.shards import write_shards
from trainer.state import STATE_FILE
from trainer.step import cpu_has_native_bf16
from trainer.synthetic import write_dataset


@pytest.mark.slow
def test_fit_trains_and_exports_an_embedder(ray_local, tmp_path):
    write_dataset(tmp_path / "data", range(6), 6, size=32)
    (tmp_path / "data" / "person_00000" / "broken.png").write_bytes(b"\x89PNG not really")
    spec = ModelSpec("test_resnet", embedding_size=16, input_size=(32, 32))
    config = TrainConfig(data=str(tmp_path / "data"), spec=spec, head="arcface", scale=16.0, margins={"m2": 0.2},
                         epochs=2, batch_size=8, optimizer="adamw", lr=3e-3, cpus_per_worker=1, log_every=2,
                         average_decay=0.9)
    result = fit(config, tmp_path / "model", storage=tmp_path / "runs", name="t")
    assert [h["epoch"] for h in result.history] == [1, 2]
    assert all(np.isfinite(h["loss"]) for h in result.history)
    assert result.skipped and result.skipped[0][0].endswith("broken.png")
    model = load_embedder(tmp_path / "model")
    assert model.spec.version.startswith("test_resnet-d16-")
    saved = sorted(p.name for p in (tmp_path / "runs" / "t").rglob(HISTORY_FILE))
    assert len(saved) <= 2  # keep-last-2 checkpoints
    assert json.loads(next((tmp_path / "runs" / "t").rglob(HISTORY_FILE)).read_text())["classes"] == 6
    # the exported weights are the run's average, not its last step's, and the run's note says so
    assert "moving average (decay up to 0.9)" in result.note
    # precision auto: bf16 where this CPU computes it natively, and the history and the note say which
    native = cpu_has_native_bf16()
    assert {h["precision"] for h in result.history} == {"bf16" if native else "fp32"}
    assert ("trained under bf16 autocast" in result.note) == native
    last = max(p for p in (tmp_path / "runs" / "t").glob("checkpoint_*") if p.is_dir())
    state = torch.load(last / STATE_FILE, weights_only=False)
    exported = model.state_dict()
    assert state["average"]["updates"] == sum(h["steps"] for h in result.history)
    for name, tensor in state["average"]["weights"].items():
        torch.testing.assert_close(exported[name], tensor)
    assert not torch.equal(exported["neck.fc.weight"], state["module"]["embedder.neck.fc.weight"])


@pytest.mark.slow
def test_a_run_streams_parquet_shards_and_resumes_on_other_numbers_of_workers(ray_local, tmp_path):
    """Checkpoints carry the whole training state, the class-sharded head's centres included: one epoch on one
    worker, the next on two (the centres split into a block per worker; joined again on fewer workers:
    tests/trainer/test_state.py). A worker's death mid-run, its node with it:
    tests/jobs/pipelines/test_node_faults.py."""
    write_dataset(tmp_path / "data", range(5), 8, size=32)
    # a JPEG cut short: its first bytes pass the packing, its decoding fails at training
    (tmp_path / "data" / "person_00001" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    summary = write_shards(list_images(tmp_path / "data"), tmp_path / "shards", rows_per_shard=7)
    assert summary.rows == 41 and summary.shards == 6
    spec = ModelSpec("test_resnet", embedding_size=16, input_size=(32, 32))
    config = TrainConfig(data=str(tmp_path / "shards"), spec=spec, head="cosface", scale=16.0, epochs=1,
                         batch_size=4, optimizer="adamw", lr=3e-3, workers=1, cpus_per_worker=1, log_every=0,
                         sample_rate=0.7, random_shift=0.1, precision="bf16")  # bf16 as on GPUs: bf16 gathers
    first = fit(config, tmp_path / "model", storage=tmp_path / "runs", name="s")
    assert [h["epoch"] for h in first.history] == [1]
    with pytest.raises(BadInput, match=r"lr 0.003 -> 0.01\)"):  # another run's setting: refused before it starts
        fit(replace(config, epochs=2, lr=0.01), tmp_path / "model", storage=tmp_path / "runs", name="s")
    # an interrupted run: checkpoints on disk that Ray's snapshot never listed, one complete and further on (8
    # samples into epoch 2), one further still whose state file was cut short: the run goes on from the first
    run = tmp_path / "runs" / "s"
    listed = max(p for p in run.glob("checkpoint_*") if p.is_dir())
    orphan, cut = run / f"{listed.name}_a", run / f"{listed.name}_b"
    for folder, samples in ((orphan, 8), (cut, 16)):
        shutil.copytree(listed, folder)
        state = torch.load(folder / STATE_FILE, weights_only=False)
        state["position"] = {"epoch": 1, "samples": samples}
        torch.save(state, folder / STATE_FILE)
        saved = json.loads((folder / "position.json").read_text())
        saved["history"][0]["marked"] = True
        (folder / "position.json").write_text(json.dumps({**saved, "epoch": 1, "samples": samples}))
    (cut / STATE_FILE).write_bytes((cut / STATE_FILE).read_bytes()[:-100])
    result = fit(replace(config, epochs=2, workers=2), tmp_path / "model", storage=tmp_path / "runs", name="s")
    assert [h["epoch"] for h in result.history] == [1, 2] and result.history[0] == {**first.history[0], "marked": True}
    assert result.history[1]["resumed_at_step"] == 1  # 8 samples: one step of 4 on each of 2 workers
    assert not orphan.exists() and not cut.exists()  # superseded, and not among the checkpoints Ray keeps
    assert "planned for 1 epoch and goes on to 2" in result.note
    assert all(np.isfinite(h["loss"]) and 1 <= h["steps"] <= 10 for h in result.history)
    assert [path for path, _ in result.skipped] == [str(tmp_path / "data" / "person_00001" / "broken.jpg")]
    assert {h["precision"] for h in result.history} == {"bf16"} and "bf16" not in result.note  # asked for
    checkpoint = max(p for p in (tmp_path / "runs" / "s").glob("checkpoint_*") if p.is_dir())
    assert sorted(p.name for p in checkpoint.glob("head_*.pt")) == ["head_000000000_000000003.pt",
                                                                   "head_000000003_000000005.pt"]
