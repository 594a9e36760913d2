"""Margin heads: the classification layer that shapes the embedding space during training.

CombinedMarginHead computes s * (cos(m1*theta + m2) - m3) for the target class and s * cos(theta) for the others
(insightface's combined margin): ArcFace is m2 = 0.5, CosFace m3 = 0.35, SphereFace-style m1 > 1. Margins are in
radians. Cosines are computed in fp32 and clamped so acos and its gradient stay finite under fp16/bf16 autocast.

Past theta_max = (pi - m2) / m1 the margin formula stops decreasing with theta, which would reward pushing a sample
further from its class. There the target logit follows cos(theta) shifted down to meet the margin curve at
theta_max, so it is continuous and keeps decreasing; this generalises ArcFace's own `cos(theta) - m*sin(m)` fallback
to m1 != 1 and m3 != 0.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

_EPS = 1e-6


def margin_logits(cos: torch.Tensor, labels: torch.Tensor, s: float, m1: float, m2: float, m3: float) -> torch.Tensor:
    """Apply the combined margin to the target column of a (N, C) cosine matrix; returns scaled fp32 logits.

    Rows whose label is -1 (a class held by another shard) are left without margin.
    """
    cos = cos.float().clamp(-1 + _EPS, 1 - _EPS)
    rows = torch.nonzero(labels >= 0, as_tuple=True)[0]
    target_cos = cos[rows, labels[rows]]
    theta = torch.acos(target_cos)
    with_margin = torch.cos(m1 * theta + m2) - m3
    theta_max = (math.pi - m2) / m1
    fallback = target_cos - (math.cos(theta_max) + 1.0) - m3
    target = torch.where(theta <= theta_max, with_margin, fallback)
    logits = cos.clone()
    logits[rows, labels[rows]] = target
    return logits * s


class CombinedMarginHead(nn.Module):
    """Class centres plus the combined margin; returns the cross-entropy loss (and logits, for accuracy)."""

    def __init__(
        self,
        embedding_size: int,
        num_classes: int,
        *,
        s: float = 64.0,
        m1: float = 1.0,
        m2: float = 0.5,
        m3: float = 0.0,
    ) -> None:
        super().__init__()
        if m1 < 1 or m2 < 0 or m3 < 0 or s <= 0:
            raise ValueError(f"margins need m1 >= 1, m2 >= 0, m3 >= 0 and s > 0; got {m1=}, {m2=}, {m3=}, {s=}")
        self.s, self.m1, self.m2, self.m3 = s, m1, m2, m3
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_size))
        nn.init.normal_(self.weight, std=0.01)

    def cosines(self, embeddings: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            return F.linear(F.normalize(embeddings.float()), F.normalize(self.weight.float()))

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = margin_logits(self.cosines(embeddings), labels, self.s, self.m1, self.m2, self.m3)
        return F.cross_entropy(logits, labels), logits


class SoftmaxHead(nn.Module):
    """The baseline: a plain linear classifier over the raw embedding and cross-entropy, no normalisation."""

    def __init__(self, embedding_size: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(embedding_size, num_classes)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.fc(embeddings.float())
        return F.cross_entropy(logits, labels), logits


MARGIN_PRESETS: dict[str, dict[str, float]] = {
    "arcface": {"m1": 1.0, "m2": 0.5, "m3": 0.0},
    "cosface": {"m1": 1.0, "m2": 0.0, "m3": 0.35},
    "sphereface": {"m1": 1.35, "m2": 0.0, "m3": 0.0},
}


def build_head(
    kind: str, embedding_size: int, num_classes: int, *, s: float = 64.0, margins: dict[str, float] | None = None
) -> nn.Module:
    """`kind` is softmax, arcface, cosface, sphereface or combined (margins given explicitly)."""
    if kind == "softmax":
        return SoftmaxHead(embedding_size, num_classes)
    if kind == "combined":
        if not margins:
            raise ValueError("head 'combined' needs explicit margins m1, m2, m3")
        chosen = margins
    elif kind in MARGIN_PRESETS:
        chosen = {**MARGIN_PRESETS[kind], **(margins or {})}
    else:
        raise ValueError(f"unknown head {kind!r}; choose softmax, combined or one of {sorted(MARGIN_PRESETS)}")
    return CombinedMarginHead(embedding_size, num_classes, s=s, **chosen)
