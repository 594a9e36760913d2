"""An exponential moving average of the embedder's weights, exported in place of the last step's weights.

Why: the weights after the last step carry the noise of the last few batches; an average over the final steps
(Polyak averaging, timm's `--model-ema`) often generalises a little better, for the cost of one `lerp` over the
weights per step. On the demo's short run with its cosine decay to zero it changed nothing (docs/training.md,
"What we tried"): it is for long runs. Only the embedder is averaged (the head is not exported), and
only on rank 0, which writes the exported model and the replicated state (DDP keeps every rank's embedder equal).

The decay warms up as min(decay, (1 + t) / (10 + t)) after t updates, so the random weights of the first steps
carry no weight by the end of a short run; until the cap binds (after about 9 / (1 - decay) updates) the average
spans roughly the last ninth of the steps so far. BatchNorm's running statistics are averaged with the weights
(they were measured on the weights of their own step); integer buffers (batches tracked) are copied.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class WeightAverage:
    def __init__(self, module: nn.Module, decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.module = copy.deepcopy(module).eval().requires_grad_(False)

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        """Move the average towards `module`'s weights (the live, unwrapped embedder)."""
        self.updates += 1
        weight = 1.0 - self.current_decay()
        averaged, live, copied = [], [], []
        for mine, theirs in zip(self.module.state_dict().values(), module.state_dict().values(), strict=True):
            if mine.is_floating_point():
                averaged.append(mine)
                live.append(theirs.detach())
            else:
                copied.append((mine, theirs))
        if averaged:
            torch._foreach_lerp_(averaged, live, weight)
        for mine, theirs in copied:
            mine.copy_(theirs)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates, "weights": self.module.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.updates = int(state["updates"])
        self.module.load_state_dict(state["weights"])
