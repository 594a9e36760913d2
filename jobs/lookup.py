"""One-shot identity lookup: embed probe images, search the gallery, decide "identity X" or "unknown".

The threshold defaults to the one calibrated with the model (stored in its checkpoint), so a lookup needs no
number typed in; a caller may override it per request.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from embedder.embed import Embedder
from embedder.errors import ModelError
from embedder.preprocess import decode_image
from indexer.decision import Decision, decide
from indexer.errors import ModelMismatch
from indexer.store import FaceIndex


@dataclass
class Lookup:
    embedder: Embedder
    index: FaceIndex
    k: int = 10
    top_n: int = 1

    def __post_init__(self) -> None:
        info = self.index.info()
        if info.model_version != self.embedder.spec.version:
            raise ModelMismatch(f"gallery {self.index.collection!r} was built with model {info.model_version}, "
                                f"but the lookup model is {self.embedder.spec.version}")

    def default_threshold(self) -> float:
        if self.embedder.calibration is not None:
            return self.embedder.calibration.threshold
        info = self.index.info()
        if info.threshold is not None:
            return info.threshold
        raise ModelError("the model has no calibrated threshold: run `arcmatch eval --calibrate` or pass --threshold")

    def identify_vectors(self, vectors: np.ndarray, threshold: float | None = None) -> list[Decision]:
        threshold = self.default_threshold() if threshold is None else threshold
        return [decide(hits, threshold, self.top_n) for hits in self.index.search(vectors, k=self.k)]

    def identify_images(self, images: list[bytes], threshold: float | None = None) -> list[Decision]:
        decoded = np.stack([decode_image(data, self.embedder.spec) for data in images])
        return self.identify_vectors(self.embedder.embed(decoded), threshold)
