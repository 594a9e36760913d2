"""The weight average: its arithmetic, and its place in the checkpointed training state."""

import pytest
import torch

from common.errors import BadInput
from embedder.model import FaceEmbedder
from trainer.average import WeightAverage
from trainer.config import TrainConfig
from trainer.heads import build_head
from trainer.state import Position, load_state, save_state
from trainer.step import TrainModule, build_optimizer


def _first_weight(module: torch.nn.Module) -> torch.Tensor:
    return next(module.parameters()).detach().clone()


def test_the_average_follows_the_weights_with_a_warming_decay(tiny_spec):
    torch.manual_seed(0)
    live = FaceEmbedder(tiny_spec)
    average = WeightAverage(live, decay=0.5)
    expected = _first_weight(live)
    batches = next(name for name, b in live.state_dict().items() if not b.is_floating_point())
    for step in range(1, 30):
        with torch.no_grad():
            for param in live.parameters():
                param.add_(torch.randn_like(param))
            live.state_dict()[batches].fill_(step)
        decay = min(0.5, (1 + step) / (10 + step))  # 0.18 at the first step: early weights fade out fast
        expected = decay * expected + (1 - decay) * _first_weight(live)
        average.update(live)
    torch.testing.assert_close(_first_weight(average.module), expected)
    assert average.current_decay() == 0.5 and average.updates == 29
    assert int(average.module.state_dict()[batches]) == 29  # integer buffers are copied, not averaged
    assert not average.module.training and not any(p.requires_grad for p in average.module.parameters())


def test_the_average_is_saved_and_resumed_with_the_training_state(tiny_spec, tmp_path):
    torch.manual_seed(0)
    config = TrainConfig(data="unused", spec=tiny_spec, optimizer="adamw", lr=1e-3, average_decay=0.99)
    module = TrainModule(FaceEmbedder(tiny_spec), build_head("arcface", 16, 4))
    optimizer = build_optimizer(module, config)
    average = WeightAverage(module.embedder, config.average_decay)
    with torch.no_grad():
        for param in module.embedder.parameters():
            param.add_(1.0)
    average.update(module.embedder)
    save_state(tmp_path, module, optimizer, Position(1, 0), [], average=average)

    resumed = WeightAverage(FaceEmbedder(tiny_spec), 0.99)
    load_state(tmp_path, TrainModule(FaceEmbedder(tiny_spec), build_head("arcface", 16, 4)),
               build_optimizer(module, config), resumed)
    assert resumed.updates == 1
    torch.testing.assert_close(_first_weight(resumed.module), _first_weight(average.module))

    # a run checkpointed before it kept an average starts the average at the checkpoint's weights
    save_state(tmp_path, module, optimizer, Position(1, 0), [])
    fresh = WeightAverage(FaceEmbedder(tiny_spec), 0.99)
    load_state(tmp_path, TrainModule(FaceEmbedder(tiny_spec), build_head("arcface", 16, 4)),
               build_optimizer(module, config), fresh)
    assert fresh.updates == 0
    torch.testing.assert_close(_first_weight(fresh.module), _first_weight(module.embedder))


@pytest.mark.parametrize("decay", [-0.1, 1.0])
def test_a_decay_outside_0_to_1_is_refused(tiny_spec, decay):
    with pytest.raises(BadInput, match="average_decay must be in"):
        TrainConfig(data="unused", spec=tiny_spec, average_decay=decay)
