"""The class-sharded head on two real gloo workers against the unsharded head on the same global batch."""


import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from common.errors import BadInput
from tests.helpers import free_port
from trainer.heads import AdaFaceHead, CombinedMarginHead
from trainer.sharded import shard_range

CLASSES, DIM, INPUT, PER_RANK, WORLD = 11, 8, 6, 4, 2  # 11 classes: shards of 6 and 5


def problem():
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(CLASSES, DIM, generator=generator)
    inputs = torch.randn(PER_RANK * WORLD, INPUT, generator=generator)
    labels = torch.tensor([0, 5, 6, 10, 3, 3, 7, 9])  # classes on both shards in both ranks' rows
    backbone = nn.Linear(INPUT, DIM)
    with torch.no_grad():
        backbone.weight.copy_(torch.randn(DIM, INPUT, generator=generator))
        backbone.bias.zero_()
    return weight, inputs, labels, backbone


def head_for(weight, rank, world, kind="arcface"):
    if kind == "adaface":  # momentum 1: the norm statistics are the batch's, the global batch's on every worker
        head = AdaFaceHead(DIM, CLASSES, s=16.0, m=0.5, momentum=1.0, rank=rank, world_size=world)
    else:
        head = CombinedMarginHead(DIM, CLASSES, s=16.0, m2=0.5, rank=rank, world_size=world)
    with torch.no_grad():
        head.weight.copy_(weight[head.start : head.end])
    return head


def forward(model, head, inputs, labels, autocast: bool):
    """Embeddings (kept for their gradient) and the head's loss and predictions; under bf16 autocast the
    embeddings are bf16, as on a GPU, so the gather and its backward all-reduce move bf16 tensors."""
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        x = model(inputs)
        x.retain_grad()
        loss, predicted = head(x, labels)
    return x, loss, predicted


def worker(rank: int, port: int, out: str, autocast: bool, kind: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        weight, inputs, labels, backbone = problem()
        model = nn.parallel.DistributedDataParallel(backbone)
        head = head_for(weight, rank, WORLD, kind)
        rows = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
        x, loss, predicted = forward(model, head, inputs[rows], labels[rows], autocast)
        loss.backward()
        torch.save({"loss": loss.detach(), "head_grad": head.weight.grad, "embedding_grad": x.grad,
                    "backbone_grad": model.module.weight.grad, "predicted": predicted,
                    "buffers": [b.clone() for b in head.buffers()]}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_shard_ranges_cover_every_class_once():
    assert [shard_range(11, r, 3) for r in range(3)] == [(0, 4), (4, 8), (8, 11)]
    with pytest.raises(BadInput, match="cannot be sharded"):
        shard_range(2, 0, 4)


@pytest.mark.parametrize(("autocast", "kind"), [(False, "arcface"), (True, "arcface"), (False, "adaface")],
                         ids=["fp32", "bf16-autocast", "adaface-fp32"])
def test_two_gloo_workers_match_the_unsharded_head(tmp_path, autocast, kind):
    mp.spawn(worker, args=(free_port(), str(tmp_path), autocast, kind), nprocs=WORLD, join=True)
    weight, inputs, labels, backbone = problem()
    head = head_for(weight, 0, 1, kind)
    x, loss, predicted = forward(backbone, head, inputs, labels, autocast)
    loss.backward()
    # bf16: the gather's backward sums bf16 gradients across ranks, rounding where one process sums none
    close = {"rtol": 2e-2, "atol": 1e-3} if autocast else {}

    for rank in range(WORLD):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        start, end = shard_range(CLASSES, rank, WORLD)
        rows = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
        assert got["embedding_grad"].dtype == (torch.bfloat16 if autocast else torch.float32)
        assert torch.isfinite(got["loss"]) and torch.isfinite(got["backbone_grad"]).all()
        torch.testing.assert_close(got["loss"], loss.detach())
        torch.testing.assert_close(got["head_grad"], head.weight.grad[start:end])
        # DDP with an unsharded head gives rank r the gradient of its own batch's mean loss: W x the global one
        torch.testing.assert_close(got["embedding_grad"], WORLD * x.grad[rows], **close)
        # after DDP's averaging, the backbone's gradient is the unsharded head's on the whole batch
        torch.testing.assert_close(got["backbone_grad"], backbone.weight.grad, **close)
        assert torch.equal(got["predicted"], predicted[rows])
        for mine, unsharded in zip(got["buffers"], head.buffers(), strict=True):  # AdaFace's norm statistics
            torch.testing.assert_close(mine, unsharded)
