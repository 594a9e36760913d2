"""The full training state in a checkpoint, so a run continues exactly where it stopped.

Weights of the whole TrainModule (backbone, neck, head), the optimizer, and the position: epoch and how many
samples of that epoch all workers together had consumed. The position is in samples, not steps, so a run can
resume on a different number of workers; the learning-rate schedule is recomputed from it.

A margin head's centres are sharded by class over the workers, so each worker writes its own block (weights and
their optimizer state) to `head_<start>_<end>.pt`; Ray Train merges the workers' files into one checkpoint
directory. Loading picks, for the classes this worker now holds, the rows of whichever blocks cover them: a run
saved on 4 workers resumes on 2 or 8 (the head is re-sharded).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from common.errors import BadInput
from trainer.average import WeightAverage
from trainer.heads import CombinedMarginHead

STATE_FILE = "train_state.pt"
HEAD_KEY = "head.weight"


@dataclass(frozen=True)
class Position:
    epoch: int  # 0-based epoch in progress
    samples: int  # samples of this epoch already trained on, by all workers together


def _sharded_head(module: nn.Module) -> CombinedMarginHead | None:
    head = getattr(module, "head", None)
    return head if isinstance(head, CombinedMarginHead) else None


def _param_index(optimizer: torch.optim.Optimizer, param: torch.Tensor) -> int:
    flat = [p for group in optimizer.param_groups for p in group["params"]]
    return next(i for i, p in enumerate(flat) if p is param)


def save_state(directory: str | Path, module: nn.Module, optimizer: torch.optim.Optimizer, position: Position,
               history: list[dict], *, rank: int = 0, average: WeightAverage | None = None) -> None:
    """Rank 0 writes the replicated state (with the weight average, if the run keeps one); every rank writes its
    block of a sharded head."""
    directory = Path(directory)
    head = _sharded_head(module)
    if head is not None:
        slot = optimizer.state.get(head.weight, {})
        torch.save({"start": head.start, "end": head.end, "weight": head.weight.detach().cpu(),
                    "optimizer": {k: v.cpu() if torch.is_tensor(v) else v for k, v in slot.items()}},
                   directory / f"head_{head.start:09d}_{head.end:09d}.pt")
    if rank != 0:
        return
    weights = module.state_dict()
    optimizer_state = optimizer.state_dict()
    if head is not None:
        weights.pop(HEAD_KEY)
        optimizer_state["state"].pop(_param_index(optimizer, head.weight), None)
    state = {"module": weights, "optimizer": optimizer_state, "position": asdict(position),
             "classes": _classes(module)}
    if average is not None:
        state["average"] = average.state_dict()
    torch.save(state, directory / STATE_FILE)
    # the class count lets a resume tell a checkpoint whose head blocks all landed (trainer/resume.py)
    (directory / "position.json").write_text(json.dumps({**asdict(position), "history": history,
                                                         "classes": _classes(module)}))


def load_state(directory: str | Path, module: nn.Module, optimizer: torch.optim.Optimizer,
               average: WeightAverage | None = None) -> tuple[Position, list]:
    """Restore weights, optimizer and weight average in place (the module already on its device); returns
    (position, history). A checkpoint written without an average starts the average at its weights."""
    directory = Path(directory)
    state = torch.load(directory / STATE_FILE, map_location="cpu", weights_only=False)
    if state.get("classes") not in (None, _classes(module)):  # each class's centre is a row: others' rows for these
        raise BadInput(f"the run was trained on {state['classes']} identities and this data holds {_classes(module)}: "
                       "a run resumes on the data it started with (start a new run, or warm-start one with "
                       "--backbone-weights)")
    try:
        return _load(directory, state, module, optimizer, average)
    except RuntimeError as exc:  # torch's size mismatch: another backbone or embedding size than the run's
        first = (str(exc).strip().splitlines() or [""])[-1].strip()[:200]
        raise BadInput(f"checkpoint {directory} does not fit this model (the run was made with another backbone "
                       f"or embedding size): {first}") from None


def _classes(module: nn.Module) -> int | None:
    head = getattr(module, "head", None)
    return getattr(head, "num_classes", None)


def _load(directory: Path, state: dict, module: nn.Module, optimizer: torch.optim.Optimizer,
          average: WeightAverage | None) -> tuple[Position, list]:
    head = _sharded_head(module)
    if head is not None and HEAD_KEY not in state["module"]:
        result = module.load_state_dict(state["module"], strict=False)  # the centres come from their blocks
        if result.missing_keys != [HEAD_KEY] or result.unexpected_keys:
            raise BadInput(f"checkpoint {directory} does not fit this model: missing {result.missing_keys}, "
                             f"unexpected {result.unexpected_keys}")
        optimizer.load_state_dict(state["optimizer"])
        _load_head_block(directory, head, optimizer)
    else:  # a replicated head (softmax), or a single-worker checkpoint that kept the centres in the module
        module.load_state_dict(state["module"])
        optimizer.load_state_dict(state["optimizer"])
    if average is not None:
        if "average" in state:
            average.load_state_dict(state["average"])
        else:
            average.module.load_state_dict(module.embedder.state_dict())
    history = json.loads((directory / "position.json").read_text()).get("history", [])
    return Position(**state["position"]), history


def _load_head_block(directory: Path, head: CombinedMarginHead, optimizer: torch.optim.Optimizer) -> None:
    """Fill this worker's classes [start, end) from the saved blocks that overlap them."""
    weight_rows, slot_rows, slot_scalars, covered = [], {}, {}, head.start
    for path in sorted(directory.glob("head_*.pt")):
        start, end = (int(part) for part in path.stem.split("_")[1:])
        if end <= head.start or start >= head.end:
            continue
        if start > covered:
            break
        block = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
        rows = slice(max(head.start, start) - start, min(head.end, end) - start)
        weight_rows.append(block["weight"][rows])
        for key, value in block["optimizer"].items():
            if torch.is_tensor(value) and value.ndim == 2:
                slot_rows.setdefault(key, []).append(value[rows])
            else:
                slot_scalars[key] = value
        covered = min(head.end, end)
    if covered < head.end:
        raise BadInput(f"checkpoint {directory} has no class centres for classes {covered}..{head.end - 1}: "
                         f"was it written for fewer classes?")
    with torch.no_grad():
        head.weight.copy_(torch.cat(weight_rows))
    if slot_rows or slot_scalars:
        # scalars (AdamW's step count) stay where the optimizer keeps them, on the CPU
        optimizer.state[head.weight] = {
            **slot_scalars, **{k: torch.cat(parts).to(head.weight.device) for k, parts in slot_rows.items()}
        }
