"""What a model directory holds, readable without torch: its file names and the calibrated threshold.

The ONNX path (ingestion actors, the search API serving a third-party model) reads these and must not pay for
importing torch and timm, a few seconds per process on a CUDA build.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

WEIGHTS_FILE = "model.pt"
CALIBRATION_FILE = "calibration.json"


@dataclass(frozen=True)
class Calibration:
    """A cosine-similarity threshold (higher is closer), and how it was chosen: for a pair false accept rate
    (target_far), or for an identification rate in a gallery of a given shape (target_fpir, from `trials` open-set
    trials; target_far is then None). measured_far and tar are the pairs' rates at the threshold either way."""

    threshold: float
    target_far: float | None
    measured_far: float
    tar: float
    pairs: int
    target_fpir: float | None = None
    trials: int = 0
    # the non-mated tail of the held-out identities (indexer.reference.TailReference.to_dict), which small
    # galleries' calibrations take as a second opinion; None where too few identities were held out
    tail_reference: dict | None = None

    def save(self, directory: str | Path) -> None:
        (Path(directory) / CALIBRATION_FILE).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, directory: str | Path) -> Calibration | None:
        path = Path(directory) / CALIBRATION_FILE
        if not path.is_file():
            return None
        return cls(**json.loads(path.read_text()))
