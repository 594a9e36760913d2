"""The full training state in a checkpoint, so a run continues exactly where it stopped.

Weights of the whole TrainModule (backbone, neck, head), the optimizer, and the position: epoch and how many
samples of that epoch all workers together had consumed. The position is in samples, not steps, so a run can
resume on a different number of workers; the learning-rate schedule is recomputed from it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

STATE_FILE = "train_state.pt"


@dataclass(frozen=True)
class Position:
    epoch: int  # 0-based epoch in progress
    samples: int  # samples of this epoch already trained on, by all workers together


def save_state(directory: str | Path, module: nn.Module, optimizer: torch.optim.Optimizer, position: Position,
               history: list[dict]) -> None:
    torch.save({"module": module.state_dict(), "optimizer": optimizer.state_dict(), "position": asdict(position)},
               Path(directory) / STATE_FILE)
    (Path(directory) / "position.json").write_text(json.dumps({**asdict(position), "history": history}))


def load_state(directory: str | Path, module: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[Position, list]:
    state = torch.load(Path(directory) / STATE_FILE, map_location="cpu", weights_only=False)
    module.load_state_dict(state["module"])
    optimizer.load_state_dict(state["optimizer"])
    history = json.loads((Path(directory) / "position.json").read_text()).get("history", [])
    return Position(**state["position"]), history
