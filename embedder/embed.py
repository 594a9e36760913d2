"""Embed batches of decoded images. This is the piece the Ray Data actors and the search API hold.

Every embedder takes (N, H, W, 3) uint8 RGB arrays from embedder.preprocess.decode_image and returns
(N, D) float32 L2-normalised vectors, so the callers never care which runtime computes them. Flip test-time
augmentation (the ModelSpec's flip_tta) is applied here once for every runtime.

torch is imported only for arcmatch's own checkpoints (embedder/torch_embedder.py): an ONNX model is served
without it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from common.errors import NotFound
from embedder.errors import ModelError
from embedder.layout import WEIGHTS_FILE, Calibration
from embedder.preprocess import normalize_batch
from embedder.spec import ModelSpec


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


class Embedder:
    """Shared batching, flip-TTA and normalisation; subclasses only run the network on a float batch."""

    spec: ModelSpec
    calibration: Calibration | None
    batch_size: int
    flip_tta: bool = False  # force flip-TTA for evaluation, whatever the spec says
    channels_last: bool = False  # the network takes (N, 3, H, W) batches laid out NHWC in memory (normalize_batch)

    def _forward(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def embed(self, images: np.ndarray) -> np.ndarray:
        if len(images) == 0:
            return np.zeros((0, self.spec.embedding_size), dtype=np.float32)
        out = []
        for start in range(0, len(images), self.batch_size):
            x = normalize_batch(images[start : start + self.batch_size], self.spec, channels_last=self.channels_last)
            raw = self._forward(x)
            if self.spec.flip_tta or self.flip_tta:
                raw = raw + self._forward(x[..., ::-1].copy(order="K"))  # the mirror image, in x's memory layout
            out.append(raw)
        vectors = np.concatenate(out)
        if vectors.shape[1] != self.spec.embedding_size:
            raise ModelError(f"model returns {vectors.shape[1]}-d vectors, its spec says {self.spec.embedding_size}")
        return l2_normalize(vectors)


def open_embedder(
    model: str | Path, *, device: str = "cpu", batch_size: int = 64, threads: int | None = None
) -> Embedder:
    """An arcmatch checkpoint directory (model.pt or model.onnx beside spec.json), or an ONNX file whose
    spec.json lies beside it as `<name>.spec.json`."""
    path = Path(model)
    if not path.exists():
        raise NotFound(f"model {path} does not exist")
    if path.is_dir() and (path / WEIGHTS_FILE).is_file():
        import torch

        from embedder.torch_embedder import TorchEmbedder

        if threads:
            torch.set_num_threads(threads)
        return TorchEmbedder.from_checkpoint(path, device=device, batch_size=batch_size)
    from embedder.onnx import OnnxEmbedder

    if path.is_dir() or path.suffix == ".onnx":
        return OnnxEmbedder.from_path(path, batch_size=batch_size, threads=threads)
    raise ModelError(f"{path} is neither an arcmatch checkpoint directory nor an ONNX model")


def __getattr__(name: str):
    if name == "TorchEmbedder":  # `from embedder.embed import TorchEmbedder` keeps working, torch loaded on demand
        from embedder.torch_embedder import TorchEmbedder

        return TorchEmbedder
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
