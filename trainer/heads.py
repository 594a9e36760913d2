"""Margin heads: the classification layer that shapes the embedding space during training.

CombinedMarginHead computes s * (cos(m1*theta + m2) - m3) for the target class and s * cos(theta) for the others
(insightface's combined margin): ArcFace is m2 = 0.5, CosFace m3 = 0.35, SphereFace-style m1 > 1. Margins are in
radians. Cosines are computed in fp32 and clamped so acos and its gradient stay finite under fp16/bf16 autocast.

Past theta_max = (pi - m2) / m1 the margin formula stops decreasing with theta, which would reward pushing a sample
further from its class. There the target logit follows cos(theta) shifted down to meet the margin curve at
theta_max, so it is continuous and keeps decreasing; this generalises ArcFace's own `cos(theta) - m*sin(m)` fallback
to m1 != 1 and m3 != 0.

AdaFaceHead (Kim et al., CVPR 2022) moves the margin per sample with image quality, read from the norm of the raw
embedding (blurred, occluded or badly lit faces get small norms). A face of ordinary quality gets CosFace's additive
margin; a clear one a negative angular margin and twice the additive one, which stresses the hard examples among
clear faces; an unclear one ArcFace's angular margin, which stresses the easy ones, so the loss stops pulling
faces that carry no identity towards their class. The norm is standardised by a running mean and deviation over
batches, so the same head works whatever scale a backbone's features have.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from common.errors import BadInput
from trainer.cosine import cosine_matrix
from trainer.sharded import ShardedCrossEntropy, gather_batch, global_argmax, sample_centres, shard_range

_EPS = 1e-6


Margin = float | torch.Tensor  # one value, or one per row of the cosine matrix (AdaFace)


def margin_logits(cos: torch.Tensor, labels: torch.Tensor, s: float, m1: float, m2: Margin,
                  m3: Margin) -> torch.Tensor:
    """Apply the combined margin to the target column of a (N, C) cosine matrix; returns scaled fp32 logits.

    Rows whose label is -1 (a class held by another shard) are left without margin. A negative angular margin
    (AdaFace's clear faces) cannot turn the angle below zero.
    """
    cos = cos.float().clamp(-1 + _EPS, 1 - _EPS)
    rows = torch.nonzero(labels >= 0, as_tuple=True)[0]
    if torch.is_tensor(m2):
        m2 = m2[rows]
    if torch.is_tensor(m3):
        m3 = m3[rows]
    target_cos = cos[rows, labels[rows]]
    theta = torch.acos(target_cos)
    with_margin = torch.cos((m1 * theta + m2).clamp_min(0.0)) - m3
    theta_max = (math.pi - m2) / m1
    cos_max = torch.cos(theta_max) if torch.is_tensor(theta_max) else math.cos(theta_max)
    fallback = target_cos - (cos_max + 1.0) - m3
    target = torch.where(theta <= theta_max, with_margin, fallback)
    logits = cos.clone()
    logits[rows, labels[rows]] = target
    return logits * s


class CombinedMarginHead(nn.Module):
    """Class centres plus the combined margin; returns the cross-entropy loss and the predicted classes.

    With world_size > 1 the centres are sharded by class over the workers (trainer/sharded.py): this worker holds
    classes [start, end), the loss is over the global batch, and `forward` predicts for the local rows. With
    sample_rate < 1 each step uses only a sample of the centres (Partial FC, An et al. 2022): every class present
    in the global batch plus random others, `sample_rate` of the shard in all.
    """

    def __init__(
        self,
        embedding_size: int,
        num_classes: int,
        *,
        s: float = 64.0,
        m1: float = 1.0,
        m2: float = 0.5,
        m3: float = 0.0,
        rank: int = 0,
        world_size: int = 1,
        sample_rate: float = 1.0,
    ) -> None:
        super().__init__()
        if m1 < 1 or m2 < 0 or m3 < 0 or s <= 0:
            raise BadInput(f"margins need m1 >= 1, m2 >= 0, m3 >= 0 and s > 0; got {m1=}, {m2=}, {m3=}, {s=}")
        if not 0 < sample_rate <= 1:
            raise BadInput(f"sample_rate must be in (0, 1], got {sample_rate}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in a world of {world_size}")
        self.s, self.m1, self.m2, self.m3 = s, m1, m2, m3
        self.num_classes, self.rank, self.world_size, self.sample_rate = num_classes, rank, world_size, sample_rate
        self.start, self.end = shard_range(num_classes, rank, world_size)
        self.weight = nn.Parameter(torch.empty(self.end - self.start, embedding_size))
        nn.init.normal_(self.weight, std=0.01)

    def logits(
        self, embeddings: torch.Tensor, labels: torch.Tensor, centres: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Scaled fp32 logits against `centres` (default: all of this shard); labels index its rows, -1 elsewhere."""
        weight = self.weight if centres is None else centres
        m2, m3 = self.margins(embeddings)
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            cos = cosine_matrix(embeddings.float(), weight.float())
        return margin_logits(cos, labels, self.s, self.m1, m2, m3)

    def margins(self, embeddings: torch.Tensor) -> tuple[Margin, Margin]:
        """The angular and additive margins (m2, m3) for these rows: the head's own, the same for every row."""
        return self.m2, self.m3

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rows = embeddings.shape[0]
        embeddings, labels = gather_batch(embeddings, labels, self.rank, self.world_size)
        local = labels - self.start
        local[(labels < self.start) | (labels >= self.end)] = -1
        columns = torch.arange(self.start, self.end, device=labels.device)
        centres = self.weight
        if self.sample_rate < 1:
            keep = sample_centres(local, len(columns), self.sample_rate)
            local = torch.where(local >= 0, torch.searchsorted(keep, local.clamp_min(0)), local)
            centres, columns = self.weight[keep], columns[keep]
        logits = self.logits(embeddings, local, centres)
        loss = ShardedCrossEntropy.apply(logits, local, self.world_size)
        predicted = global_argmax(logits.detach(), columns, self.world_size)
        mine = slice(self.rank * rows, (self.rank + 1) * rows) if self.world_size > 1 else slice(None)
        return loss, predicted[mine]


class AdaFaceHead(CombinedMarginHead):
    """ArcFace's centres with AdaFace's quality-adaptive margin (module docstring); sharding and Partial FC alike.

    Per row, q = clip(h * (norm - mean) / std, -1, 1) from the raw embedding's norm and running statistics; the
    target logit is s * (cos(theta - m q) - m (1 + q)). Every worker sees the same gathered batch, so the running
    statistics agree across workers without a reduction; they are buffers, saved and resumed with the module.
    """

    def __init__(self, embedding_size: int, num_classes: int, *, s: float = 64.0, m: float = 0.4, h: float = 0.333,
                 momentum: float = 0.01, rank: int = 0, world_size: int = 1, sample_rate: float = 1.0) -> None:
        if not 0 < h <= 1 or not 0 < momentum <= 1:
            raise BadInput(f"adaface needs 0 < h <= 1 and 0 < momentum <= 1; got {h=}, {momentum=}")
        super().__init__(embedding_size, num_classes, s=s, m2=m, rank=rank, world_size=world_size,
                         sample_rate=sample_rate)
        self.m, self.h, self.momentum = m, h, momentum
        # AdaFace's starting values: a wide deviation keeps q near 0 (CosFace's margin) until the norms settle
        self.register_buffer("norm_mean", torch.tensor(20.0))
        self.register_buffer("norm_std", torch.tensor(100.0))

    def quality(self, embeddings: torch.Tensor) -> torch.Tensor:
        """The margin's scaler q in [-1, 1] per row; in training mode it first updates the running statistics."""
        norms = embeddings.detach().float().norm(dim=1).clamp(1e-3, 100.0)
        if self.training and len(norms) > 1:
            with torch.no_grad():
                self.norm_mean.lerp_(norms.mean(), self.momentum)
                self.norm_std.lerp_(norms.std(), self.momentum)
        return (self.h * (norms - self.norm_mean) / (self.norm_std + 1e-3)).clamp(-1.0, 1.0)

    def margins(self, embeddings: torch.Tensor) -> tuple[Margin, Margin]:
        q = self.quality(embeddings)
        return -self.m * q, self.m * (1.0 + q)


class SoftmaxHead(nn.Module):
    """The baseline: a plain linear classifier over the raw embedding and cross-entropy, no normalisation.

    Replicated on every worker (DDP averages its gradients like the backbone's); it is never sharded.
    """

    def __init__(self, embedding_size: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(embedding_size, num_classes)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.fc(embeddings.float())
        return F.cross_entropy(logits, labels), logits.argmax(dim=1)


MARGIN_PRESETS: dict[str, dict[str, float]] = {
    "arcface": {"m1": 1.0, "m2": 0.5, "m3": 0.0},
    "cosface": {"m1": 1.0, "m2": 0.0, "m3": 0.35},
    "sphereface": {"m1": 1.35, "m2": 0.0, "m3": 0.0},
}


def build_head(
    kind: str,
    embedding_size: int,
    num_classes: int,
    *,
    s: float = 64.0,
    margins: dict[str, float] | None = None,
    rank: int = 0,
    world_size: int = 1,
    sample_rate: float = 1.0,
) -> nn.Module:
    """`kind` is softmax, arcface, cosface, sphereface, adaface (margins m, h) or combined (m1, m2, m3 given).

    Margin heads are sharded over world_size workers (this one being `rank`); the softmax baseline is not.
    """
    if kind == "softmax":
        return SoftmaxHead(embedding_size, num_classes)
    if kind == "adaface":
        unknown = set(margins or {}) - {"m", "h"}
        if unknown:
            raise BadInput(f"adaface takes margins m and h, not {sorted(unknown)}")
        return AdaFaceHead(embedding_size, num_classes, s=s, rank=rank, world_size=world_size,
                           sample_rate=sample_rate, **(margins or {}))
    if kind == "combined":
        if not margins:
            raise BadInput("head 'combined' needs explicit margins m1, m2, m3")
        chosen = margins
    elif kind in MARGIN_PRESETS:
        chosen = {**MARGIN_PRESETS[kind], **(margins or {})}
    else:
        raise BadInput(f"unknown head {kind!r}; choose softmax, combined, adaface or one of {sorted(MARGIN_PRESETS)}")
    return CombinedMarginHead(embedding_size, num_classes, s=s, rank=rank, world_size=world_size,
                              sample_rate=sample_rate, **chosen)
