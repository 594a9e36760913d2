"""Export an embedder to ONNX: backbone + neck + L2 normalisation, dynamic batch, ModelSpec beside it.

The exported directory opens like any third-party ONNX model (embedder.onnx.OnnxEmbedder) and keeps the
checkpoint's version, so its vectors can go into the same collection as the torch model's. A model whose spec
embeds each face with its mirror image (flip_tta) is exported without the normalisation: the two views' raw
vectors are summed, as the checkpoint sums them (embedder.embed); two unit vectors summed are another vector
(a cosine of 0.997 with the checkpoint's, measured on a small model).
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from embedder.checkpoint import CALIBRATION_FILE
from embedder.model import FaceEmbedder
from embedder.onnx import ONNX_FILE


class _Normalized(nn.Module):
    def __init__(self, model: FaceEmbedder) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.model(images), dim=1)


def export_onnx(model: FaceEmbedder, directory: str | Path, *, calibration_from: str | Path | None = None,
                opset: int = 17) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model = model.cpu().eval()
    example = torch.zeros(2, 3, *model.spec.input_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        network = model if model.spec.flip_tta else _Normalized(model)
        torch.onnx.export(network, (example,), str(directory / ONNX_FILE), input_names=["input"],
                          output_names=["embedding"], dynamic_axes={"input": {0: "batch"}, "embedding": {0: "batch"}},
                          opset_version=opset, dynamo=False)
    model.spec.save(directory)
    if calibration_from is not None and (Path(calibration_from) / CALIBRATION_FILE).is_file():
        shutil.copy(Path(calibration_from) / CALIBRATION_FILE, directory / CALIBRATION_FILE)
    return directory / ONNX_FILE
