"""What a training run was started with, kept beside its checkpoints (`<storage>/<name>/arcmatch-run.json`), so
that resuming it with other settings is refused instead of mixing two runs: a QA pass resumed a run of batch 32
and learning rate 0.1 with batch 16 and 0.01, and its step count, learning-rate schedule and history all went on
as if nothing had changed.

What may change on a resume is what a machine decides (workers, GPUs, precision, threads, how often it logs and
checkpoints) and the number of epochs (a run taken further); everything that says what is learnt may not.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from common.errors import BadInput
from common.names import counted
from trainer.config import TrainConfig

RECORD = "arcmatch-run.json"
# a resume may take these as the command gives them
MACHINE = frozenset({"workers", "gpu", "channels_last", "precision", "cpus_per_worker", "log_every",
                     "checkpoint_every", "keep_checkpoints", "max_failures",
                     "average_decay"})  # the exported average's cap, from the next step: the weights are the run's


def new_run_name() -> str:
    """The name of a run not named by its caller: `arcmatch train` says it as the run starts, so that it can be
    resumed by name."""
    return f"arcmatch-train-{time.strftime('%Y%m%d-%H%M%S')}"


def check_or_record(run: Path, config: TrainConfig) -> str | None:
    """Records a new run's settings; for a run that has a record, BadInput where a setting it learns by differs,
    and a note where it is taken further (more or fewer epochs). Returns the note, or None."""
    now = {k: v for k, v in config.to_dict().items() if k not in MACHINE}
    if "://" not in now["data"]:  # the same data from another working directory is the same data
        now["data"] = str(Path(now["data"]).resolve())
    path = run / RECORD
    if not path.is_file():
        run.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(now, indent=2, default=str) + "\n")
        return None
    before = json.loads(path.read_text())
    now = json.loads(json.dumps(now, default=str))  # as the record holds it
    changed = sorted(k for k in set(before) | set(now) if k != "epochs" and before.get(k) != now.get(k))
    if changed:
        said = ", ".join(f"{k} {_short(before.get(k))} -> {_short(now.get(k))}" for k in changed[:4])
        more = f" and {len(changed) - 4} more" if len(changed) > 4 else ""
        raise BadInput(f"run {run.name!r} was started with other settings ({said}{more}): a run resumes with the "
                       f"ones it learns by (drop or change those flags), or start a new run (another --name)")
    if before.get("epochs") != now.get("epochs"):
        path.write_text(json.dumps(now, indent=2) + "\n")
        return (f"run {run.name!r} was planned for {counted(before.get('epochs'), 'epoch')} and goes on to "
                f"{now.get('epochs')}: its learning-rate schedule now ends there")
    return None


def _short(value) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 60 else text[:57] + "..."
