"""ModelSpec: the one contract that crosses the packages.

It says how to build the network and how to turn a decoded image into its input tensor, so that ingestion and
search preprocess exactly as training did. Its `version` goes into the Milvus collection, so vectors of two
different models are never searched together.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from embedder.errors import ModelError

SPEC_FILE = "spec.json"
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
ALIGNMENTS = ("none", "five_point")


@dataclass(frozen=True)
class ModelSpec:
    """How an embedding model is built and fed.

    crop_box is (left, top, right, bottom) as fractions of the decoded image, applied before the resize; None keeps
    the whole image. alignment says how the face gets into the input: "none" crops by crop_box and resizes (for
    pre-aligned datasets such as LFW-gray), "five_point" detects the face and warps its five landmarks onto the
    ArcFace template scaled to input_size (embedder/faces.py; crop_box must then be None). mean/std are per
    channel on the 0..1 scale (timm's convention), in `channel_order`.
    """

    backbone: str
    embedding_size: int = 512
    input_size: tuple[int, int] = (112, 112)  # (height, width)
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    channel_order: str = "RGB"
    crop_box: tuple[float, float, float, float] | None = None
    alignment: str = "none"  # "none" or "five_point"; spec.json files older than the field are "none"
    interpolation: str = "bilinear"
    backbone_args: dict = field(default_factory=dict)
    flip_tta: bool = False  # embed the image and its mirror image, sum, then normalise
    version: str = ""

    def __post_init__(self) -> None:
        if self.embedding_size <= 0:
            raise ModelError(f"embedding_size must be positive, got {self.embedding_size}")
        if len(self.input_size) != 2 or min(self.input_size) < 8:
            raise ModelError(f"input_size must be (height, width) of at least 8 px, got {self.input_size}")
        if self.channel_order not in ("RGB", "BGR"):
            raise ModelError(f"channel_order must be 'RGB' or 'BGR', got {self.channel_order!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise ModelError(f"interpolation must be one of {INTERPOLATIONS}, got {self.interpolation!r}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ModelError(f"mean and std need three values each, std > 0; got {self.mean}, {self.std}")
        if self.crop_box is not None:
            left, top, right, bottom = self.crop_box
            if not (0 <= left < right <= 1 and 0 <= top < bottom <= 1):
                raise ModelError(f"crop_box must be fractions with left < right and top < bottom, got {self.crop_box}")
        if self.alignment not in ALIGNMENTS:
            raise ModelError(f"alignment must be one of {ALIGNMENTS}, got {self.alignment!r}")
        if self.alignment != "none" and self.crop_box is not None:
            raise ModelError(f"crop_box applies to alignment 'none' only; alignment {self.alignment!r} places the "
                             "face by its landmarks")

    def with_version(self, version: str) -> ModelSpec:
        return replace(self, version=version)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelSpec:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ModelError(f"unknown ModelSpec fields {unknown}; known: {sorted(known)}")
        if "backbone" not in data:
            raise ModelError("ModelSpec needs a 'backbone'")
        values = dict(data)
        for key in ("input_size", "mean", "std", "crop_box"):
            if values.get(key) is not None:
                values[key] = tuple(values[key])
        return cls(**values)

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / SPEC_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, directory: str | Path) -> ModelSpec:
        path = Path(directory) / SPEC_FILE
        if not path.is_file():
            raise ModelError(f"{directory} has no {SPEC_FILE}: not an arcmatch model directory")
        return cls.from_json_file(path)

    @classmethod
    def from_json_file(cls, path: str | Path) -> ModelSpec:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ModelError(f"{path} is not valid JSON: {exc}") from exc
        return cls.from_dict(data)
