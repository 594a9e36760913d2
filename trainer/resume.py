"""Which checkpoint a resumed run starts from: the newest complete one on disk, not only the one Ray Train's
snapshot lists.

Ray Train records a checkpoint in its run snapshot only after every worker's files have landed; a Ctrl-C (or a
driver's death) between the two leaves a complete checkpoint on disk that the snapshot does not list. A QA pass
interrupted a run just after an epoch's last checkpoint: the resume started from the one before it, trained that
epoch's last step again, replaced the epoch's history entry with a one-step one, and left the newer checkpoint on
disk where `--keep-checkpoints` never counted it. So the driver looks for the newest checkpoint whose files are all
there (each a whole zip archive, the head's blocks covering every class), the workers start from it where it is
ahead of Ray's, and checkpoints Ray does not keep are removed once a run has ended.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

from trainer.state import STATE_FILE, Position

POSITION_FILE = "position.json"
PREFIX = "checkpoint_"  # Ray Train's checkpoint folders: checkpoint_<timestamp>, so their names sort by time


@dataclass(frozen=True)
class Found:
    path: Path
    position: Position

    @property
    def order(self) -> tuple[int, int, str]:
        return self.position.epoch, self.position.samples, self.path.name


def read_position(directory: str | Path) -> Position | None:
    """The position a checkpoint holds, from its small JSON file; None where it is missing or unreadable."""
    try:
        saved = json.loads((Path(directory) / POSITION_FILE).read_text())
        return Position(int(saved["epoch"]), int(saved["samples"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _whole(path: Path) -> bool:
    """A file torch.save wrote and that was copied to the end: a zip archive whose every member checks out."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None
    except (OSError, zipfile.BadZipFile, EOFError):
        return False


def complete(directory: Path) -> Found | None:
    """The checkpoint in `directory` where all of its files are there and whole, else None. The head's blocks
    (one per worker, trainer/state.py) must run from class 0 without a gap and end at the class count the
    position file gives (checkpoints written before it gave one are taken at their blocks' word)."""
    position = read_position(directory)
    if position is None or not _whole(directory / STATE_FILE):
        return None
    end = 0
    for block in sorted(directory.glob("head_*.pt")):
        try:
            start, stop = (int(part) for part in block.stem.split("_")[1:])
        except ValueError:
            return None
        if start != end or not _whole(block):
            return None
        end = stop
    classes = json.loads((directory / POSITION_FILE).read_text()).get("classes")
    if classes is not None and end not in (0, classes):
        return None
    return Found(directory, position)


def newest_complete(run: Path) -> Found | None:
    """The furthest complete checkpoint of the run in folder `run` (the latest written among equals), or None."""
    found = [f for d in run.glob(f"{PREFIX}*") if d.is_dir() and (f := complete(d)) is not None]
    return max(found, key=lambda f: f.order, default=None)


def ahead(candidate: str | None, restored: str | Path | None) -> bool:
    """Whether the checkpoint the driver found on disk (`candidate`) is further on than the one Ray Train hands
    the workers (`restored`: its snapshot's, or the last one reported before a worker failed)."""
    if candidate is None:
        return False
    mine = read_position(candidate)
    if mine is None:
        return False
    theirs = read_position(restored) if restored is not None else None
    return theirs is None or (mine.epoch, mine.samples) > (theirs.epoch, theirs.samples)


def remove_unkept(run: Path, kept: list[Path]) -> list[Path]:
    """Remove the run's checkpoint folders that Ray Train does not keep and that are older than the newest it
    keeps (left by an interrupted run, or one a resume started from); returns what was removed. Nothing is
    removed when Ray keeps none: then no folder is known to be superseded."""
    kept_names = {Path(p).name for p in kept}
    if not kept_names:
        return []
    newest = max(kept_names)
    removed = []
    for directory in sorted(run.glob(f"{PREFIX}*")):
        if directory.is_dir() and directory.name not in kept_names and directory.name < newest:
            shutil.rmtree(directory, ignore_errors=True)
            removed.append(directory)
    return removed
