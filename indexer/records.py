"""The records a gallery's store reads and writes: what a collection was built for, a face to write, a search hit.

Plain data, apart from the collection's operations (indexer/store.py, which re-exports them where every caller
has found them), so that each module stays one thing and within a screenful of scrolling.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from indexer.ids import validate_threshold


@dataclass(frozen=True)
class CollectionInfo:
    """What the collection was built for; stored as JSON in the collection property Property.INFO."""

    model_version: str
    dim: int
    threshold: float | None = None
    model_spec: dict | None = None
    reference: dict | None = None  # the model's tail reference (indexer/reference.py), where its eval kept one

    def to_json(self) -> str:
        return json.dumps({"arcmatch": 1, "model_version": self.model_version, "dim": self.dim,
                           "threshold": self.threshold, "model_spec": self.model_spec, "reference": self.reference},
                          separators=(",", ":"))

    @classmethod
    def of_model(cls, spec, threshold: float | None, reference: dict | None = None) -> CollectionInfo:
        """What a collection records of the model whose vectors it holds: its ModelSpec (embedder/spec.py, taken
        as it comes: the indexer imports no model code), calibrated threshold (None: none yet; else a cosine,
        checked: a collection kept with one beyond [-1, 1] would answer every search "unknown") and the tail
        reference of its held-out identities (embedder.layout.Calibration.tail_reference)."""
        return cls(spec.version, spec.embedding_size, None if threshold is None else validate_threshold(threshold),
                   spec.to_dict(), reference)

    @classmethod
    def of_calibrated(cls, spec, calibration) -> CollectionInfo:
        """of_model with what a model's calibration (embedder.layout.Calibration, or None) holds."""
        if calibration is None:
            return cls.of_model(spec, None)
        return cls.of_model(spec, calibration.threshold, calibration.tail_reference)

    @classmethod
    def from_json(cls, text: str) -> CollectionInfo | None:
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, TypeError):
            return None
        if not isinstance(data, dict) or data.get("arcmatch") != 1:
            return None
        return cls(data["model_version"], int(data["dim"]), data.get("threshold"), data.get("model_spec"),
                   data.get("reference"))


@dataclass(frozen=True)
class FaceRow:
    source: str
    identity: str
    vector: np.ndarray
    face_id: int
    metadata: dict | None = None


@dataclass(frozen=True)
class Hit:
    face_id: int
    identity: str
    score: float  # cosine similarity, higher is closer
    source: str
