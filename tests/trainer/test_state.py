"""Checkpoint state of a class-sharded head: blocks saved by W workers load back on any other number."""

import torch

from common.errors import BadInput
from embedder.model import FaceEmbedder
from trainer.config import TrainConfig
from trainer.heads import build_head
from trainer.state import Position, load_state, save_state
from trainer.step import TrainModule, build_optimizer

CLASSES = 10


def trained_module(spec, rank: int, world: int, full: torch.Tensor):
    torch.manual_seed(0)
    module = TrainModule(FaceEmbedder(spec), build_head("arcface", 16, CLASSES, rank=rank, world_size=world))
    with torch.no_grad():
        module.head.weight.copy_(full[module.head.start : module.head.end])
    optimizer = build_optimizer(module, TrainConfig(data="unused", spec=spec, optimizer="adamw", lr=1e-3))
    module.head.weight.grad = torch.ones_like(module.head.weight) * (rank + 1)
    optimizer.step()  # gives the head's rows optimizer state (exp_avg) that depends on the rank
    return module, optimizer


def test_head_blocks_saved_on_three_workers_load_on_two_and_on_one(tiny_spec, tmp_path):
    full = torch.randn(CLASSES, 16)
    saved = [trained_module(tiny_spec, rank, 3, full) for rank in range(3)]
    with torch.no_grad():
        for param in saved[0][0].embedder.parameters():  # rank 0's replicated weights are the ones saved
            param.add_(1.0)
    for rank, (module, optimizer) in enumerate(saved):
        save_state(tmp_path, module, optimizer, Position(1, 64), [{"epoch": 1}], rank=rank)
    assert len(list(tmp_path.glob("head_*.pt"))) == 3
    expected_weight = torch.cat([m.head.weight.detach() for m, _ in saved])
    expected_avg = torch.cat([o.state[m.head.weight]["exp_avg"] for m, o in saved])

    for rank, world in [(0, 2), (1, 2), (0, 1)]:  # split across two, and joined on one
        module, optimizer = trained_module(tiny_spec, rank, world, torch.zeros(CLASSES, 16))
        position, history = load_state(tmp_path, module, optimizer)
        head = module.head
        assert position == Position(1, 64) and history == [{"epoch": 1}]
        torch.testing.assert_close(head.weight.detach(), expected_weight[head.start : head.end])
        torch.testing.assert_close(optimizer.state[head.weight]["exp_avg"], expected_avg[head.start : head.end])
        backbone = dict(module.embedder.named_parameters())
        for name, param in saved[0][0].embedder.named_parameters():
            torch.testing.assert_close(backbone[name], param)


def test_missing_blocks_are_an_error(tiny_spec, tmp_path):
    import pytest

    module, optimizer = trained_module(tiny_spec, 0, 2, torch.randn(CLASSES, 16))
    save_state(tmp_path, module, optimizer, Position(0, 0), [], rank=0)  # rank 1's block never written
    whole, whole_optimizer = trained_module(tiny_spec, 0, 1, torch.zeros(CLASSES, 16))
    with pytest.raises(BadInput, match="no class centres for classes 5..9"):
        load_state(tmp_path, whole, whole_optimizer)


def test_a_checkpoint_missing_a_layer_is_an_error(tiny_spec, tmp_path):
    import pytest

    from trainer.state import STATE_FILE

    module, optimizer = trained_module(tiny_spec, 0, 2, torch.randn(CLASSES, 16))
    save_state(tmp_path, module, optimizer, Position(0, 0), [], rank=0)
    state = torch.load(tmp_path / STATE_FILE, weights_only=False)
    lost = next(iter(state["module"]))
    del state["module"][lost]
    torch.save(state, tmp_path / STATE_FILE)
    fresh, fresh_optimizer = trained_module(tiny_spec, 0, 2, torch.zeros(CLASSES, 16))
    with pytest.raises(BadInput, match=f"does not fit this model: missing .*{lost}"):
        load_state(tmp_path, fresh, fresh_optimizer)


def test_a_run_resumes_only_on_its_own_classes_and_model(tiny_spec, tmp_path):
    import pytest

    module, optimizer = trained_module(tiny_spec, 0, 1, torch.randn(CLASSES, 16))
    save_state(tmp_path, module, optimizer, Position(1, 0), [], rank=0)
    other = TrainModule(FaceEmbedder(tiny_spec), build_head("arcface", 16, CLASSES + 2))
    other_optimizer = build_optimizer(other, TrainConfig(data="unused", spec=tiny_spec, optimizer="adamw", lr=1e-3))
    with pytest.raises(BadInput, match=f"trained on {CLASSES} identities and this data holds {CLASSES + 2}"):
        load_state(tmp_path, other, other_optimizer)  # other people's centres for these
    from dataclasses import replace

    wider = replace(tiny_spec, embedding_size=32)
    bigger = TrainModule(FaceEmbedder(wider), build_head("arcface", 32, CLASSES))
    bigger_optimizer = build_optimizer(bigger, TrainConfig(data="unused", spec=wider, optimizer="adamw", lr=1e-3))
    with pytest.raises(BadInput, match="does not fit this model"):
        load_state(tmp_path, bigger, bigger_optimizer)
