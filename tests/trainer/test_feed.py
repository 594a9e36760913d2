import numpy as np
import pytest
from ray.exceptions import RayTaskError
from ray.train import WorkerGroupError

from common.errors import BadInput
from embedder.errors import ModelError
from embedder.model import check_backbone
from embedder.sources import LabelledImage
from trainer.config import TrainConfig
from trainer.feed import _epoch_indices
from trainer.ray_loop import enough_to_train, worker_error


def test_every_worker_gets_the_same_number_of_full_batches():
    shards = [_epoch_indices(103, epoch=2, seed=0, rank=r, world=3, batch=8) for r in range(3)]
    assert {len(s) for s in shards} == {32}
    flat = np.concatenate(shards)
    assert len(np.unique(flat)) == len(flat)  # no image on two workers in one epoch


def test_a_tree_that_cannot_make_a_run_is_refused_before_any_worker_starts(tiny_spec):
    config = TrainConfig(data="tree", spec=tiny_spec, batch_size=4, workers=2)
    with pytest.raises(BadInput, match="tree holds 1 identity: training learns to tell people apart"):
        enough_to_train([LabelledImage(f"{i}.png", "ann") for i in range(20)], config)
    with pytest.raises(BadInput, match="7 images cannot fill one batch of 4 on each of 2 worker"):
        enough_to_train([LabelledImage(f"{i}.png", "ann" if i % 2 else "bob") for i in range(7)], config)
    enough_to_train([LabelledImage(f"{i}.png", "ann" if i % 2 else "bob") for i in range(8)], config)


def test_a_workers_refusal_of_the_data_is_said_as_the_callers_error_not_a_bug():
    refusal = BadInput("3 images cannot fill one batch of 128 on each of 1 workers")
    assert worker_error(WorkerGroupError("rank 0", {0: refusal})) is refusal
    wrapped = RayTaskError("train_loop_per_worker", "Traceback ...", refusal).as_instanceof_cause()
    found = worker_error(WorkerGroupError("rank 0", {0: RuntimeError("other"), 1: wrapped}))
    assert type(found) is BadInput and str(found) == str(refusal)
    assert worker_error(WorkerGroupError("rank 0", {0: RuntimeError("a bug")})) is None


def test_an_unknown_backbone_is_named_with_timms_nearest_names():
    check_backbone("resnet10t")
    with pytest.raises(ModelError, match="timm has no backbone 'resnet10'; nearest: resnet10t"):
        check_backbone("resnet10")
