"""The collectives a class-sharded margin head needs: gather the global batch, and a softmax split over shards.

With a million identities the class centres (C x d fp32, plus their gradient and momentum) no longer fit one GPU,
and every worker holding all of them wastes memory W times over. Each of W workers holds a contiguous block of
about C/W centres; a step all-gathers the embeddings and labels of the global batch, computes cosines against its
local centres only, and reduces the softmax normaliser over the shards (max, then the sum of exponentials). The
loss is then the cross-entropy over all C classes on the global batch, the number an unsharded head gives.

Gradient scale: the centres get the gradient of the global-batch loss. Each worker's embeddings get W times the
gradient of the global loss with respect to them, because DDP divides the backbone's gradients by W when it
averages them; the backbone then receives exactly what DDP with an unsharded head would give it.

Everything here runs without collectives when world_size is 1, so the same head serves single-process training.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from common.errors import BadInput


def shard_range(num_classes: int, rank: int, world_size: int) -> tuple[int, int]:
    """[start, end) of the classes rank holds: contiguous blocks, sizes differing by at most one."""
    if num_classes < world_size:
        raise BadInput(f"{num_classes} classes cannot be sharded over {world_size} workers (one class each at least)")
    base, extra = divmod(num_classes, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


class _GatherRows(torch.autograd.Function):
    """all_gather of equal-sized row blocks; backward sums the gradient over ranks and scales it by world size."""

    @staticmethod
    def forward(ctx, local: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
        ctx.rank, ctx.world_size, ctx.rows = rank, world_size, local.shape[0]
        parts = [torch.empty_like(local) for _ in range(world_size)]
        dist.all_gather(parts, local.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous()
        dist.all_reduce(grad)
        start = ctx.rank * ctx.rows
        return grad[start : start + ctx.rows] * ctx.world_size, None, None


def gather_batch(
    embeddings: torch.Tensor, labels: torch.Tensor, rank: int, world_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The global batch on every rank: embeddings (with gradient) and labels. Every rank's batch has one size."""
    if world_size == 1:
        return embeddings, labels
    parts = [torch.empty_like(labels) for _ in range(world_size)]
    dist.all_gather(parts, labels.contiguous())
    return _GatherRows.apply(embeddings, rank, world_size), torch.cat(parts)


class ShardedCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of a (N, C_local) logit block whose softmax runs over the columns of every shard.

    `labels` index local columns; -1 marks a row whose class lives on another shard. Every rank returns the same
    loss. The backward is softmax - one-hot over the local columns, divided by N: no collective needed.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, labels: torch.Tensor, world_size: int) -> torch.Tensor:
        here = torch.nonzero(labels >= 0, as_tuple=True)[0]
        maximum = logits.max(dim=1).values
        target = torch.zeros_like(maximum)
        target[here] = logits[here, labels[here]]
        if world_size > 1:
            dist.all_reduce(maximum, op=dist.ReduceOp.MAX)
        probs = torch.exp(logits - maximum[:, None])
        total = probs.sum(dim=1)
        if world_size > 1:
            dist.all_reduce(total)
            dist.all_reduce(target)
        probs /= total[:, None]
        ctx.save_for_backward(probs, labels)
        # log-sum-exp minus the target logit: exact even where the target's probability underflows
        return (torch.log(total) + maximum - target).mean()

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        probs, labels = ctx.saved_tensors
        here = torch.nonzero(labels >= 0, as_tuple=True)[0]
        grad = probs.clone()
        grad[here, labels[here]] -= 1
        return grad * (grad_output / len(probs)), None, None


def global_argmax(
    logits: torch.Tensor, column_class: torch.Tensor, world_size: int
) -> torch.Tensor:
    """The predicted class of every row over all shards; `column_class` maps local columns to class ids."""
    values, columns = logits.max(dim=1)
    classes = column_class[columns]
    if world_size == 1:
        return classes
    all_values = [torch.empty_like(values) for _ in range(world_size)]
    all_classes = [torch.empty_like(classes) for _ in range(world_size)]
    dist.all_gather(all_values, values)
    dist.all_gather(all_classes, classes)
    best = torch.stack(all_values).argmax(dim=0)
    return torch.stack(all_classes).gather(0, best[None])[0]


def sample_centres(local_labels: torch.Tensor, num_local: int, sample_rate: float) -> torch.Tensor:
    """Partial FC: sorted local column indices to keep, every class of the batch plus random others.

    The sample is `sample_rate` of the shard (at least every positive class). Its complement's centres get no
    gradient this step; their momentum and weight decay still apply.
    """
    count = max(1, int(round(sample_rate * num_local)))
    positive = torch.unique(local_labels[local_labels >= 0])
    if count <= len(positive):
        return positive
    score = torch.rand(num_local, device=local_labels.device)
    score[positive] = 2.0  # above any random score: positives are always kept
    return torch.topk(score, count, sorted=False).indices.sort().values
