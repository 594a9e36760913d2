"""Training data from an image tree (`identity/image`) or a CSV manifest: listing, labels and decoding.

Decoding goes through embedder.preprocess.decode_image, the same function ingestion and search use, so a model
sees at training time exactly the pixels it will see in production. Unreadable images are skipped and counted.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from embedder.errors import ImageError
from embedder.preprocess import decode_image
from embedder.spec import ModelSpec

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".ppm", ".tif", ".tiff", ".webp", ".gif"}


@dataclass(frozen=True)
class LabelledImage:
    path: str
    identity: str


def list_image_tree(root: str | Path) -> list[LabelledImage]:
    """Every image file under root/<identity>/, sorted; hidden files and other suffixes are ignored."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image tree {root} does not exist or is not a directory")
    items = [
        LabelledImage(str(path), folder.name)
        for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        for path in sorted(folder.iterdir())
        if path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")
    ]
    if not items:
        raise FileNotFoundError(f"no images found under {root} (expected {root}/<identity>/<image>)")
    return items


def read_manifest(path: str | Path) -> list[LabelledImage]:
    """A CSV with `path` and `identity` columns; relative paths are taken from the manifest's folder."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest {path} does not exist")
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"path", "identity"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"manifest {path} lacks the column(s) {sorted(missing)}; it has {reader.fieldnames}")
        items = [LabelledImage(str(path.parent / row["path"]), row["identity"]) for row in reader]
    if not items:
        raise ValueError(f"manifest {path} lists no images")
    return items


def write_manifest(path: str | Path, items: list[LabelledImage]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "identity"])
        writer.writerows((item.path, item.identity) for item in items)


def list_images(source: str | Path) -> list[LabelledImage]:
    """An image tree (a directory) or a CSV manifest (a .csv file)."""
    source = Path(source)
    return read_manifest(source) if source.suffix.lower() == ".csv" else list_image_tree(source)


@dataclass
class DecodedImages:
    """Decoded uint8 images with integer labels; `skipped` holds (path, reason) for what could not be read."""

    images: np.ndarray
    labels: np.ndarray
    classes: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)


def decode_items(items: list[LabelledImage], spec: ModelSpec, classes: list[str] | None = None) -> DecodedImages:
    classes = classes if classes is not None else sorted({item.identity for item in items})
    index = {name: i for i, name in enumerate(classes)}
    images, labels, skipped = [], [], []
    for item in items:
        try:
            images.append(decode_image(Path(item.path).read_bytes(), spec))
            labels.append(index[item.identity])
        except (ImageError, OSError) as exc:
            skipped.append((item.path, str(exc)))
    height, width = spec.input_size
    stacked = np.stack(images) if images else np.zeros((0, height, width, 3), np.uint8)
    return DecodedImages(stacked, np.asarray(labels, dtype=np.int64), classes, skipped)
