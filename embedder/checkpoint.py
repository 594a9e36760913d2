"""An embedder checkpoint is a directory: weights, the ModelSpec, and the calibrated threshold.

Keeping the settings with the weights (timm's PretrainedCfg habit) means ingestion and search need nothing
re-typed: they read the input size, normalisation and decision threshold from here.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from common.errors import NotFound
from embedder.errors import ModelError
from embedder.layout import CALIBRATION_FILE, WEIGHTS_FILE, Calibration  # noqa: F401  (re-exported)
from embedder.model import FaceEmbedder
from embedder.spec import ModelSpec


def weights_version(spec: ModelSpec, weights: dict[str, torch.Tensor]) -> str:
    """A version string that changes whenever the weights (a CPU state dict) do: backbone, size and a hash of the
    tensors."""
    digest = hashlib.sha256()
    for name, tensor in sorted(weights.items()):
        digest.update(name.encode())
        digest.update(tensor.contiguous().numpy().tobytes())
    return f"{spec.backbone}-d{spec.embedding_size}-{digest.hexdigest()[:12]}"


def save_embedder(model: FaceEmbedder, directory: str | Path) -> ModelSpec:
    """Write weights (as CPU tensors) and spec; the spec's version is stamped from the weights. Returns the stamped
    spec. The model itself is left as it was: the training loop saves its live embedder at each epoch's end, and
    moving it to the CPU or into eval mode there would break the next epoch's steps on a GPU. The weights are copied
    to the CPU once, for both the hash and the file."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    # contiguous: the file holds the same bytes whatever layout the model ran in (embedder/model.py)
    weights = {name: tensor.detach().to("cpu", memory_format=torch.contiguous_format)
               for name, tensor in model.state_dict().items()}
    spec = model.spec.with_version(weights_version(model.spec, weights))
    torch.save(weights, directory / WEIGHTS_FILE)
    spec.save(directory)
    return spec


def load_embedder(directory: str | Path) -> FaceEmbedder:
    directory = Path(directory)
    if not directory.exists():
        raise NotFound(f"model {directory} does not exist")  # as embedder.embed says it: exit 4, not bad input
    spec = ModelSpec.load(directory)
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise ModelError(f"{directory} has no {WEIGHTS_FILE}")
    model = FaceEmbedder(spec)
    state = torch.load(weights, map_location="cpu", weights_only=True)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ModelError(f"{weights} does not match its spec.json: {exc}") from exc
    return model.eval()
