"""arcmatch's own checkpoints (a FaceEmbedder in torch) behind the common Embedder interface."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from embedder.checkpoint import load_embedder
from embedder.embed import Embedder
from embedder.layout import Calibration
from embedder.model import FaceEmbedder
from embedder.spec import ModelSpec


class TorchEmbedder(Embedder):
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
    def channels_last(self) -> bool:  # the batches' layout follows the model's (normalize_batch)
        return self.model.channels_last

    @property
    def spec(self) -> ModelSpec:
        return self.model.spec

    @spec.setter
    def spec(self, spec: ModelSpec) -> None:  # `eval --align` feeds the same network faces prepared otherwise
        self.model.spec = spec

    @torch.no_grad()
    def _forward(self, x: np.ndarray) -> np.ndarray:
        return self.model(torch.from_numpy(x).to(self.device)).float().cpu().numpy()
