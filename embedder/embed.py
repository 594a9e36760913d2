"""Embed batches of decoded images. This is the piece the Ray Data actors and the search API hold.

Every embedder takes (N, H, W, 3) uint8 RGB arrays from embedder.preprocess.decode_image and returns
(N, D) float32 L2-normalised vectors, so the callers never care which runtime computes them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from embedder.checkpoint import Calibration, load_embedder
from embedder.model import FaceEmbedder
from embedder.preprocess import normalize_batch
from embedder.spec import ModelSpec


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


class TorchEmbedder:
    """A FaceEmbedder in eval mode on one device, fed in chunks of `batch_size`."""

    def __init__(
        self,
        model: FaceEmbedder,
        *,
        device: str | torch.device = "cpu",
        batch_size: int = 64,
        calibration: Calibration | None = None,
    ) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.batch_size = batch_size
        self.calibration = calibration

    @classmethod
    def from_checkpoint(cls, directory: str | Path, **kwargs) -> TorchEmbedder:
        return cls(load_embedder(directory), calibration=Calibration.load(directory), **kwargs)

    @property
    def spec(self) -> ModelSpec:
        return self.model.spec

    def embed(self, images: np.ndarray) -> np.ndarray:
        if len(images) == 0:
            return np.zeros((0, self.spec.embedding_size), dtype=np.float32)
        out = []
        for start in range(0, len(images), self.batch_size):
            x = torch.from_numpy(normalize_batch(images[start : start + self.batch_size], self.spec))
            out.append(self.model.embed(x.to(self.device)).cpu().numpy())
        return np.concatenate(out).astype(np.float32)
