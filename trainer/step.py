"""One training step, in plain torch: importable and testable on a machine with no Ray.

The Ray Train loop (trainer/ray_loop.py) only feeds batches to these functions and reports what they return.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from embedder.model import FaceEmbedder
from embedder.preprocess import normalize_batch
from embedder.spec import ModelSpec
from trainer.config import TrainConfig
from trainer.heads import build_head


class TrainModule(nn.Module):
    """Embedder and margin head as one module, so DDP wraps (and synchronises) both."""

    def __init__(self, embedder: FaceEmbedder, head: nn.Module) -> None:
        super().__init__()
        self.embedder = embedder
        self.head = head

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(self.embedder(images), labels)


def build_module(config: TrainConfig, classes: int, *, rank: int = 0, world: int = 1) -> TrainModule:
    """The embedder and margin head a TrainConfig describes, built in one place so that the Ray worker and the
    benchmarks that time its step train the same module (the config's head, scale, margins, dropout)."""
    embedder = FaceEmbedder(config.spec, dropout=config.dropout, backbone_weights=config.backbone_weights,
                            channels_last=config.channels_last)
    head = build_head(config.head, config.spec.embedding_size, classes, s=config.scale,
                      margins=config.margins or None, rank=rank, world_size=world, sample_rate=config.sample_rate)
    return TrainModule(embedder, head)


def make_batch(
    images: np.ndarray,
    labels: np.ndarray,
    spec: ModelSpec,
    rng: np.random.Generator,
    *,
    shift: float = 0.0,
    erase: float = 0.0,
    channels_last: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images -> normalised float input, augmented as aligned faces tolerate: random horizontal flips; with
    shift > 0, a random translation of up to shift x the side (a random crop of the edge-padded image); with
    erase > 0, that share of the images gets one random occluding patch (`random_erase`). channels_last: the
    tensor is laid out NHWC in memory, as a channels-last model takes it without a copy (an NCHW model must not
    get it: a convolution runs channels-last when either its input or its weight is)."""
    flip = rng.random(len(images)) < 0.5
    images = images.copy()
    images[flip] = images[flip, :, ::-1]
    if shift > 0:
        images = random_shift(images, shift, rng)
    if erase > 0:
        random_erase(images, erase, rng)
    x = torch.from_numpy(normalize_batch(images, spec, channels_last=channels_last))
    return x, torch.from_numpy(labels)


def random_shift(images: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Translate each image by up to `fraction` of its side in x and y, filling with the edge pixels."""
    n, height, width = images.shape[:3]
    pad_y, pad_x = max(1, int(fraction * height)), max(1, int(fraction * width))
    padded = np.pad(images, ((0, 0), (pad_y, pad_y), (pad_x, pad_x), (0, 0)), mode="edge")
    dy = rng.integers(0, 2 * pad_y + 1, n)
    dx = rng.integers(0, 2 * pad_x + 1, n)
    return np.stack([padded[i, dy[i] : dy[i] + height, dx[i] : dx[i] + width] for i in range(n)])


def random_erase(
    images: np.ndarray, probability: float, rng: np.random.Generator, *, area: tuple[float, float] = (0.04, 0.25)
) -> None:
    """In place: each image, with `probability`, gets one rectangle of a random solid colour covering `area` of it
    (aspect ratio 1/3 to 3), as sunglasses, a mask, a hand or a hat cover part of a face. Why: a model trained only on
    whole faces matches an occluded probe by what the patch hides; the worst misses of the demo's model were its
    occluded probes. Random erasing (Zhong et al., 2017) is the usual remedy; it did not pay for the demo's first
    slim models, and did once the neck kept the face's layout, so the demo erases a quarter of its training images
    (docs/training.md, "What we tried")."""
    n, height, width = images.shape[:3]
    chosen = np.flatnonzero(rng.random(n) < probability)
    share = rng.uniform(*area, len(chosen)) * height * width
    aspect = np.exp(rng.uniform(math.log(1 / 3), math.log(3), len(chosen)))
    hs = np.clip(np.rint(np.sqrt(share * aspect)).astype(int), 1, height)
    ws = np.clip(np.rint(np.sqrt(share / aspect)).astype(int), 1, width)
    colours = rng.integers(0, 256, (len(chosen), images.shape[3]), dtype=np.uint8)
    for i, h, w, colour in zip(chosen, hs, ws, colours, strict=True):
        y, x = rng.integers(0, height - h + 1), rng.integers(0, width - w + 1)
        images[i, y : y + h, x : x + w] = colour


def build_optimizer(module: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """Weight decay on weights only: BN parameters and biases are excluded, as in arcface_torch."""
    decay, no_decay = [], []
    for name, param in module.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim <= 1 or name.endswith(".bias") else decay).append(param)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr)
    return torch.optim.SGD(groups, lr=config.lr, momentum=0.9)


def build_scheduler(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int):
    """Linear warmup, then cosine decay to zero: a step-based schedule, so resuming mid-epoch is exact."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX). There bf16 autocast trained the demo's
    model in 0.74-0.83 of fp32's time at the same accuracy (docs/BENCHMARKS.md, "Channels-last convolutions");
    elsewhere oneDNN emulates it, slower than fp32. The hardware probes are torch's private ones (one a later torch
    lacks counts as no); torch must also be running its AVX-512 kernels, which ATEN_CPU_CAPABILITY=avx2 turns off
    (with it, a bf16 step of the demo's model ran at a tenth of fp32's speed here)."""
    if "AVX512" not in torch.backends.cpu.get_cpu_capability():
        return False
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def autocast_dtype(precision: str, device_type: str, *, native_cpu_bf16: bool | None = None) -> torch.dtype | None:
    """The autocast dtype for a TrainConfig.precision on this device. `auto` is bf16 where the hardware computes it
    (GPUs, and CPUs with bf16 units: `native_cpu_bf16`, probed when None) and fp32 elsewhere; bf16 has fp32's
    range, so no loss scaling, unlike fp16. `bf16` on any CPU is also the way to exercise the GPU's numerics on a
    machine without one."""
    if precision == "bf16":
        return torch.bfloat16
    if precision == "auto":
        if device_type == "cuda":
            return torch.bfloat16
        if device_type == "cpu" and (cpu_has_native_bf16() if native_cpu_bf16 is None else native_cpu_bf16):
            return torch.bfloat16
    return None


def train_step(
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    autocast_dtype: torch.dtype | None = None,
    clip_grad_norm: float = 0.0,
) -> tuple[float, float]:
    """Forward, backward, clip, step. Returns (loss, top-1 accuracy of the head's predictions on this batch)."""
    module.train()
    device_type = images.device.type
    with torch.autocast(device_type=device_type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        loss, predicted = module(images, labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if clip_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(module.parameters(), clip_grad_norm)
    optimizer.step()
    scheduler.step()
    accuracy = (predicted == labels).float().mean()
    return float(loss.detach()), float(accuracy)
