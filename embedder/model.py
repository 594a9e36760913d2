"""The embedding network: a timm backbone by name plus an embedding neck.

The neck (BN -> Dropout -> Linear -> BN1d) is the face-recognition standard from insightface: the final BN1d
keeps embeddings centred, which is what makes cosine similarity between them meaningful early in training.

A backbone built with timm's `global_pool=""` (in the spec's backbone_args) hands the neck its last feature map
instead of the channel means, and the neck flattens it, as insightface's iResNets do with their 7x7 map: the linear
layer then learns a weight per position, so where on the face a feature fires (eye, mouth) is not averaged away.
The map's size follows from input_size, which the spec fixes.

Convolutions run in the channels-last (NHWC) layout by default: oneDNN on CPUs and cuDNN on GPUs pick faster
kernels for it, and on the demo's CPU model a training step took about 0.9 of the time and a forward about 0.76
(docs/BENCHMARKS.md, "Channels-last convolutions"). The layout is a property of the tensors, not of the
weights: a model saved in either loads into either.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from torch import nn

from embedder.errors import ModelError
from embedder.spec import ModelSpec


class EmbeddingNeck(nn.Module):
    def __init__(self, in_features: int, embedding_size: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.bn_in = nn.BatchNorm1d(in_features)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_features, embedding_size)
        self.bn_out = nn.BatchNorm1d(embedding_size)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.bn_out(self.fc(self.dropout(self.bn_in(features.flatten(1)))))


class FaceEmbedder(nn.Module):
    """Backbone + neck. forward() returns raw embeddings; embed() returns L2-normalised ones. channels_last=False
    keeps PyTorch's default NCHW layout, which reproduces a run from before the layout changed bit for bit."""

    def __init__(self, spec: ModelSpec, dropout: float = 0.0, backbone_weights: str | Path | None = None, *,
                 channels_last: bool = True) -> None:
        super().__init__()
        self.spec = spec
        try:
            self.backbone = timm.create_model(
                spec.backbone, pretrained=False, num_classes=0, **spec.backbone_args
            )
        except RuntimeError as exc:  # timm: "Unknown model (...)"
            raise ModelError(f"cannot build backbone {spec.backbone!r}: {exc}") from exc
        except TypeError as exc:  # a backbone_args key the model does not take
            raise ModelError(f"backbone {spec.backbone!r} rejects {spec.backbone_args}: {exc}") from exc
        if backbone_weights is not None:
            load_backbone_weights(self.backbone, backbone_weights)
        self.neck = EmbeddingNeck(_output_width(self.backbone, spec), spec.embedding_size, dropout)
        self.channels_last = channels_last
        if channels_last:
            self.to(memory_format=torch.channels_last)  # 4-d weights only; .to(device) later keeps it

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.neck(self.backbone(images))

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.forward(images).float(), dim=1)


def _output_width(backbone: nn.Module, spec: ModelSpec) -> int:
    """Measured, not read from num_features: some timm models (MobileNetV3) add a wider head conv after it.

    A pooled backbone gives (N, C); an unpooled one (global_pool="") its map (N, C, H, W), which the neck flattens.
    """
    was_training = backbone.training
    backbone.eval()
    with torch.no_grad():
        out = backbone(torch.zeros(1, 3, *spec.input_size))
    backbone.train(was_training)
    if out.ndim not in (2, 4):
        raise ModelError(f"backbone {spec.backbone!r} returns shape {tuple(out.shape)}, expected pooled (N, C) "
                         "or a feature map (N, C, H, W)")
    return out[0].numel()


def load_backbone_weights(backbone: nn.Module, path: str | Path) -> None:
    """Initialise a backbone from a local file (nothing is downloaded). A classifier head in the file is ignored."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"backbone weights file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
    missing, unexpected = backbone.load_state_dict(state, strict=False)
    unexpected = [k for k in unexpected if not k.startswith(("fc.", "head.", "classifier."))]
    if missing or unexpected:
        raise ModelError(
            f"{path} does not fit backbone: {len(missing)} missing keys (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})"
        )


def check_backbone(name: str) -> None:
    """ModelError, naming timm's nearest names, unless timm knows `name`: a job checks before it starts workers,
    where the same mistake would surface as a worker's failure after Ray's start-up."""
    if timm.is_model(name):
        return
    import difflib

    near = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
    raise ModelError(f"timm has no backbone {name!r}" + (f"; nearest: {', '.join(near)}" if near else
                                                          " (`timm.list_models('*name*')` lists its names)"))


def with_output_stride(spec: ModelSpec, stride: int) -> tuple[ModelSpec, str]:
    """The spec with timm's `output_stride` set, where the backbone takes it; returns (spec, what was done).

    Face models see 112 px inputs, where a stride-32 backbone ends on a 4x4 map (3.5 rounded up); stride 16 keeps
    7x7, as insightface's iResNets do, by dilating the last stage. Models without the option (ViTs, for one) keep
    their own stride, and the note says so. The spec records what was built, so the embedder rebuilds the same net.
    """
    args = {**spec.backbone_args, "output_stride": stride}
    try:
        timm.create_model(spec.backbone, pretrained=False, num_classes=0, **args)
    except (TypeError, AssertionError, ValueError, NotImplementedError) as exc:
        return spec, f"{spec.backbone} has no output_stride {stride} ({type(exc).__name__}); its own stride is kept"
    return replace(spec, backbone_args=args), f"{spec.backbone} built with output_stride {stride}"
