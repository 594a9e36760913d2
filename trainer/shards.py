"""Parquet shards of a training set: image bytes with their labels, written once and streamed by Ray Data.

A large training set (millions of images over millions of small files) is slow to list and read on shared or object
storage, and decoding all of it into every worker's memory, as the in-memory path does, stops scaling. `arcmatch
prepare --parquet` packs the files into shards of `rows_per_shard` rows (columns image, label, identity, path) plus
`classes.json`, the identity of each label, so the label space is fixed before training. Training reads the shards
as a Ray Data dataset, decodes on CPU tasks and streams batches to the workers.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from common.errors import BadInput, Conflict, NotFound
from embedder.errors import ImageError
from embedder.formats import decoders_for
from embedder.preprocess import decode_image
from embedder.sources import LabelledImage, faces_or_skip, read_bytes
from embedder.spec import ModelSpec

CLASSES_FILE = "classes.json"
SCHEMA = pa.schema([("image", pa.binary()), ("label", pa.int32()), ("identity", pa.string()), ("path", pa.string())])


@dataclass
class ShardSummary:
    rows: int = 0
    shards: int = 0
    classes: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason): files that could not be read
    emptied: list[str] = field(default_factory=list)  # identities none of whose files were kept: no label


def is_shard_dir(path: str | Path) -> bool:
    return (Path(path) / CLASSES_FILE).is_file()


def read_alignment(directory: str | Path) -> dict | None:
    """How `prepare --align` aligned the shards' faces ({"size": [h, w]}), or None for photos as they came."""
    path = Path(directory) / CLASSES_FILE
    return json.loads(path.read_text()).get("aligned") if path.is_file() else None


def shard_spec(spec: ModelSpec, directory: str | Path) -> ModelSpec:
    """The spec a model trained on these shards carries: five-point alignment when the shards hold aligned faces
    (serving must then align photos the same way), the given spec otherwise."""
    if read_alignment(directory) is None:
        return spec
    return replace(spec, alignment="five_point", crop_box=None)


def decode_spec(spec: ModelSpec) -> ModelSpec:
    """How to decode a shard's image bytes for `spec`: aligned faces are stored aligned, so only resized."""
    return replace(spec, alignment="none", crop_box=None) if spec.alignment != "none" else spec


def read_classes(directory: str | Path) -> list[str]:
    path = Path(directory) / CLASSES_FILE
    if not path.is_file():
        raise NotFound(f"{directory} has no {CLASSES_FILE}: not a directory written by arcmatch prepare")
    return json.loads(path.read_text())["classes"]


def write_shards(items: list[LabelledImage], out: str | Path, rows_per_shard: int = 5000, *, policy=None,
                 aligned_size: tuple[int, int] = (112, 112)) -> ShardSummary:
    """Pack image files into Parquet shards, in item order. Missing or unreadable files are skipped and reported.

    Images are stored as their original bytes, not decoded: the shards stay small, and a corrupt image is found
    (and skipped) at training time by the same decoder as everything else uses; a file whose first bytes are no
    image format read here is reported now. With a FacePolicy (`prepare
    --align`) each photo's face is found, aligned to the five-point template at `aligned_size` and stored as a
    PNG instead; a photo without a usable face is skipped with the reason. A model trained on such shards carries
    alignment "five_point" in its spec, so every serving path aligns photos the same way.
    """
    if rows_per_shard < 1:
        raise BadInput(f"rows_per_shard must be at least 1, got {rows_per_shard}")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise Conflict(f"{out} is not empty; shards are written into a new directory")
    out.mkdir(parents=True, exist_ok=True)
    classes = sorted({item.identity for item in items})
    label = {name: i for i, name in enumerate(classes)}
    summary = ShardSummary(classes=len(classes))
    rows: list[dict] = []
    held: set[str] = set()  # identities with a row written

    def flush() -> None:
        pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), out / f"part-{summary.shards:05d}.parquet")
        summary.shards += 1
        summary.rows += len(rows)
        rows.clear()

    aligner = ModelSpec("aligner", embedding_size=1, input_size=aligned_size, alignment="five_point")
    for item in items:
        if policy is not None:
            faces, reason = faces_or_skip(item.path, aligner, policy)
            if not faces:
                summary.skipped.append((item.path, reason))
                continue
            data = _png(faces[0].chip)
        else:
            try:
                data = read_bytes(item.path)
                decoders_for(data)  # its first bytes: a text file or garbage is reported now, not packed
            except OSError as exc:
                summary.skipped.append((item.path, f"unreadable: {exc.strerror or exc}"))
                continue
            except ImageError as exc:
                summary.skipped.append((item.path, str(exc)))
                continue
        rows.append({"image": data, "label": label[item.identity], "identity": item.identity, "path": item.path})
        held.add(item.identity)
        if len(rows) == rows_per_shard:
            flush()
    if rows:
        flush()
    if len(held) < len(classes):
        classes = _relabelled(out, classes, held)
        summary.emptied = sorted(set(label) - held)
        summary.classes = len(classes)
    aligned = {"size": list(aligned_size)} if policy is not None else None
    (out / CLASSES_FILE).write_text(json.dumps({"classes": classes, "rows": summary.rows, "aligned": aligned}))
    return summary


def _relabelled(out: Path, classes: list[str], held: set[str]) -> list[str]:
    """The classes that kept a row, labelled 0..n-1 again in every shard written: an identity whose every photo
    was skipped (no face found by `--align`, all unreadable) would otherwise be a label the head trains a centre
    for with no photo of it. Rewrites the shards only where some identity was emptied."""
    kept = [name for name in classes if name in held]
    new = {name: n for n, name in enumerate(kept)}
    mapping = np.array([new.get(name, -1) for name in classes], dtype=np.int64)  # -1: no row carries it
    for part in sorted(out.glob("part-*.parquet")):
        table = pq.read_table(part)
        index = table.schema.get_field_index("label")
        column = table.schema.field(index)
        labels = pa.array(mapping[table.column("label").to_numpy()], column.type)
        pq.write_table(table.set_column(index, column, labels), part)
    return kept


def decode_rows(batch: dict[str, np.ndarray], spec: ModelSpec) -> dict[str, np.ndarray]:
    """A Ray Data batch of shard rows -> decoded uint8 images. Rows that fail to decode are kept with ok=False
    (and a black image), so the worker counts them and the batch shapes stay fixed."""
    height, width = spec.input_size
    images = np.zeros((len(batch["label"]), height, width, 3), np.uint8)
    ok = np.ones(len(images), bool)
    for i, data in enumerate(batch["image"]):
        try:
            images[i] = decode_image(bytes(data), spec)
        except ImageError:
            ok[i] = False
    return {"image": images, "label": batch["label"].astype(np.int64), "ok": ok, "path": batch["path"]}


def _png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "PNG")
    return buffer.getvalue()
