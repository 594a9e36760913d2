import os
import subprocess
import sys
from dataclasses import replace

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
    cpu_has_native_bf16,
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


@pytest.mark.parametrize(("precision", "head", "margins"), [("fp32", "arcface", {"m2": 0.2}),
                                                          ("bf16", "arcface", {"m2": 0.2}),
                                                          ("fp32", "adaface", {"m": 0.2})],
                         ids=["fp32", "bf16", "adaface"])
def test_training_steps_learn_a_tiny_problem(tiny_spec, precision, head, margins):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(4, 32, 32, 3), dtype=np.uint8).repeat(8, axis=0)
    labels = np.arange(4).repeat(8)
    module = TrainModule(FaceEmbedder(tiny_spec), build_head(head, 16, 4, s=16.0, margins=margins))
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


def test_random_erase_covers_one_solid_patch_on_a_share_of_the_images():
    from trainer.step import random_erase

    images = np.full((400, 32, 32, 3), 7, np.uint8)
    random_erase(images, 0.5, np.random.default_rng(0), area=(0.1, 0.2))
    for image in images:
        changed = (image != 7).any(axis=2)
        if not changed.any():
            continue
        ys, xs = np.nonzero(changed)  # one rectangle, one colour
        box = image[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1].reshape(-1, 3)
        assert (box == box[0]).all()
        assert 0.08 * 32 * 32 <= len(box) <= 0.23 * 32 * 32 and len(box) == changed.sum()
    hit = (images != 7).any(axis=(1, 2, 3)).mean()
    assert 0.4 < hit < 0.6  # a patch whose colour happens to be 7 everywhere is unseen: vanishingly rare


def test_make_batch_erases_only_when_asked(tiny_spec):
    images = np.full((64, 32, 32, 3), 128, np.uint8)
    plain, _ = make_batch(images, np.zeros(64), tiny_spec, np.random.default_rng(0))
    erased, _ = make_batch(images, np.zeros(64), tiny_spec, np.random.default_rng(0), erase=1.0)
    assert torch.unique(plain).numel() == 1
    assert (erased != plain).flatten(1).any(dim=1).float().mean() > 0.9
    assert (images == 128).all()  # the caller's images are not touched
    with pytest.raises(BadInput, match="random_erase"):
        TrainConfig(data="unused", spec=tiny_spec, random_erase=1.5)


def test_precision_picks_bf16_where_the_hardware_computes_it_unless_told():
    assert autocast_dtype("auto", "cuda") is torch.bfloat16
    assert autocast_dtype("auto", "cpu", native_cpu_bf16=True) is torch.bfloat16
    assert autocast_dtype("auto", "cpu", native_cpu_bf16=False) is None
    assert autocast_dtype("auto", "cpu") is (torch.bfloat16 if cpu_has_native_bf16() else None)


def test_no_native_bf16_when_torch_runs_avx2_kernels():
    """Held to AVX2 kernels, torch emulates bf16 (a tenth of fp32's speed), whatever units the CPU has."""
    probe = "from trainer.step import cpu_has_native_bf16; print(cpu_has_native_bf16())"
    held = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                          env={**os.environ, "ATEN_CPU_CAPABILITY": "avx2"})
    assert held.stdout.strip() == "False"
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
    assert module.embedder.channels_last
    assert not build_module(replace(config, channels_last=False), classes=7).embedder.channels_last
