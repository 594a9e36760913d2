import numpy as np
import pytest
import torch

from common.errors import BadInput
from embedder.model import FaceEmbedder
from trainer.config import TrainConfig
from trainer.heads import build_head
from trainer.step import (
    TrainModule,
    autocast_dtype,
    build_module,
    build_optimizer,
    build_scheduler,
    make_batch,
    train_step,
)


def test_weight_decay_skips_batchnorm_and_bias(tiny_spec):
    module = TrainModule(FaceEmbedder(tiny_spec), build_head("arcface", 16, 5))
    config = TrainConfig(data="unused", spec=tiny_spec, optimizer="sgd", lr=0.1, weight_decay=5e-4)
    decay, no_decay = build_optimizer(module, config).param_groups
    assert decay["weight_decay"] == 5e-4 and no_decay["weight_decay"] == 0.0
    no_decay_ids = {id(p) for p in no_decay["params"]}
    for name, param in module.named_parameters():
        if name.endswith(".bias") or "bn" in name.split(".")[-2]:
            assert id(param) in no_decay_ids, name
    assert id(module.head.weight) not in no_decay_ids


def test_warmup_then_cosine_schedule(tiny_spec):
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1.0)
    scheduler = build_scheduler(optimizer, warmup_steps=4, total_steps=20)
    lrs = []
    for _ in range(20):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[:4] == [0.25, 0.5, 0.75, 1.0]
    assert all(a >= b for a, b in zip(lrs[3:], lrs[4:], strict=False)) and lrs[-1] < 0.05


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_training_steps_learn_a_tiny_problem(tiny_spec, precision):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(4, 32, 32, 3), dtype=np.uint8).repeat(8, axis=0)
    labels = np.arange(4).repeat(8)
    module = TrainModule(FaceEmbedder(tiny_spec), build_head("arcface", 16, 4, s=16.0, margins={"m2": 0.2}))
    config = TrainConfig(data="unused", spec=tiny_spec, optimizer="adamw", lr=3e-3)
    optimizer = build_optimizer(module, config)
    scheduler = build_scheduler(optimizer, 1, 60)
    losses = []
    for _ in range(60):
        x, y = make_batch(images, labels, tiny_spec, rng)
        loss, acc = train_step(module, optimizer, scheduler, x, y, clip_grad_norm=5.0,
                               autocast_dtype=autocast_dtype(precision, "cpu"))
        losses.append(loss)
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    assert acc > 0.9


def test_random_shift_translates_within_the_limit():
    from trainer.step import random_shift

    image = np.zeros((1, 20, 20, 3), np.uint8)
    image[0, 10, 10] = 255
    shifted = random_shift(image.repeat(50, axis=0), 0.1, np.random.default_rng(0))
    assert shifted.shape == (50, 20, 20, 3)
    positions = {tuple(np.argwhere(s[..., 0] == 255)[0]) for s in shifted if (s == 255).any()}
    assert len(positions) > 5 and all(8 <= y <= 12 and 8 <= x <= 12 for y, x in positions)


def test_precision_picks_bf16_on_gpus_unless_told():
    assert autocast_dtype("auto", "cuda") is torch.bfloat16 and autocast_dtype("auto", "cpu") is None
    assert autocast_dtype("bf16", "cpu") is torch.bfloat16 and autocast_dtype("fp32", "cuda") is None
    with pytest.raises(BadInput, match="precision"):
        TrainConfig(data="unused", spec=None, precision="fp16")


def test_build_module_follows_the_config(tiny_spec):
    config = TrainConfig(data="unused", spec=tiny_spec, head="cosface", scale=30.0, margins={"m3": 0.25}, dropout=0.2)
    module = build_module(config, classes=7)
    head = module.head
    assert (head.s, head.m1, head.m2, head.m3) == (30.0, 1.0, 0.0, 0.25)
    assert head.weight.shape[0] == 7
    assert any(isinstance(m, torch.nn.Dropout) and m.p == 0.2 for m in module.embedder.modules())
