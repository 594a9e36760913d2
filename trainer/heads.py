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

from common.errors import BadInput
from trainer.cosine import cosine_matrix
from trainer.sharded import ShardedCrossEntropy, gather_batch, global_argmax, sample_centres, shard_range

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
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            cos = cosine_matrix(embeddings.float(), weight.float())
        return margin_logits(cos, labels, self.s, self.m1, self.m2, self.m3)

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
    """`kind` is softmax, arcface, cosface, sphereface or combined (margins given explicitly).

    Margin heads are sharded over world_size workers (this one being `rank`); the softmax baseline is not.
    """
    if kind == "softmax":
        return SoftmaxHead(embedding_size, num_classes)
    if kind == "combined":
        if not margins:
            raise BadInput("head 'combined' needs explicit margins m1, m2, m3")
        chosen = margins
    elif kind in MARGIN_PRESETS:
        chosen = {**MARGIN_PRESETS[kind], **(margins or {})}
    else:
        raise BadInput(f"unknown head {kind!r}; choose softmax, combined or one of {sorted(MARGIN_PRESETS)}")
    return CombinedMarginHead(embedding_size, num_classes, s=s, rank=rank, world_size=world_size,
                              sample_rate=sample_rate, **chosen)
