"""Where images come from: an image tree or a manifest (CSV or Parquet), read one way by training, evaluation and
ingestion; the bytes behind a path or URI; and decoding that marks a bad file skipped instead of stopping a job
(decode_or_skip, the one helper every path uses).

A tree is `root/<identity>/<image>`. A manifest row has `uri` (or `path`) and `identity`, optionally `face_id`
(the caller's own id, which then keys the row) and `metadata` (a JSON object); any other column is kept as a
metadata string. URIs are local paths (relative ones are taken from the manifest's folder), file:// or anything
pyarrow's filesystems open (s3://, gs://, hdfs://).
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common.errors import BadInput, NotFound
from common.photos import is_photo, photos_under
from embedder.errors import ImageError
from embedder.preprocess import decode_image, refuse_flat
from embedder.spec import ModelSpec

MANIFEST_SUFFIXES = (".csv", ".parquet")
RESERVED = {"uri", "path", "identity", "face_id", "metadata"}
UNLABELLED = ""  # a face nobody has named yet; the same value as indexer.ids.UNLABELLED (embedder imports no indexer)
# metadata of a face its owner says is nobody who will be enrolled (`ingest --strangers`); the same key as
# indexer.strangers.CONFIRMED
STRANGER = "stranger"


@dataclass(frozen=True)
class LabelledImage:
    path: str  # a local path or a filesystem URI
    identity: str


def list_image_tree(root: str | Path) -> list[LabelledImage]:
    """Every photo under root/<identity>/, at any depth below it (a person's photos filed by year are still
    theirs), sorted, by common/photos.py's rule (a photo by its name or its first bytes; hidden files and other
    files left alone; linked folders followed). A folder name that is not UTF-8 is kept with its bytes written
    as escapes (`printable`)."""
    root = Path(root)
    if not root.is_dir():
        raise NotFound(f"image tree {root} does not exist or is not a directory")
    items = [
        LabelledImage(str(path), folder.name)
        for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        for path in photos_under(folder)
    ]
    if not items:
        raise NotFound(f"no images found under {root} (expected {root}/<identity>/<image>)")
    return items


def printable(text: str) -> str:
    """A file name as text: bytes that were not UTF-8 (kept by Python as lone surrogates, which no store, hash or
    report can encode) written as \\xNN escapes."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _row(uri: str, identity: str, source: str, face_key: str, metadata: dict, skip: str = "") -> dict:
    """`skip`: why the row is reported and not read (decode_batch), where the listing already knows."""
    return {"uri": uri, "identity": identity, "source": source, "face_key": face_key,
            "metadata": json.dumps(metadata, ensure_ascii=False, default=str), "skip": skip}


def _tree_rows(root: Path) -> list[dict]:
    rows = []
    for item in list_image_tree(root):
        relative = printable(Path(item.path).relative_to(root).as_posix())  # stable if the tree moves
        name = printable(item.identity)
        skip = "" if name == item.identity else "folder name is not valid UTF-8, so it cannot be a name: rename it"
        rows.append(_row(item.path, name, relative, relative, {}, skip))
    rows += [_row(str(path), "", printable(path.name), printable(path.name), {},
                  f"not in a person's folder ({root.name}/<identity>/<image>)")
             for path in sorted(root.iterdir()) if not path.name.startswith(".") and is_photo(path)]
    return rows


def _unlabelled_tree_rows(root: Path) -> list[dict]:
    """Every image anywhere under root, none of them named: folders are albums or days, not people."""
    paths = photos_under(root)
    if not paths:
        raise NotFound(f"no images found under {root}")
    # keyed apart from the same file in a named tree: taking a folder in as unnamed never drops a name
    return [_row(str(p), UNLABELLED, printable(p.relative_to(root).as_posix()),
                 "unlabelled:" + printable(p.relative_to(root).as_posix()), {}) for p in paths]


def _manifest_table(path: Path) -> list[dict]:
    import pyarrow as pa

    try:
        if path.suffix.lower() == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path).to_pylist()
        import pyarrow.csv as pacsv

        options = pacsv.ConvertOptions(strings_can_be_null=False, column_types={"identity": "string",
                                                                                "face_id": "string"})
        return pacsv.read_csv(path, convert_options=options).to_pylist()
    except (pa.ArrowInvalid, OSError) as exc:
        raise BadInput(f"manifest {path} cannot be read: {exc}") from exc


def _metadata(record: dict, path: Path, n: int) -> dict:
    metadata = {k: v for k, v in record.items() if k not in RESERVED and v is not None}
    raw = record.get("metadata")
    if raw:
        try:
            parsed = json.loads(raw) if isinstance(raw, str) else raw
        except json.JSONDecodeError as exc:
            raise BadInput(f"manifest {path} row {n + 1}: metadata is not JSON: {exc}") from exc
        if not isinstance(parsed, dict):
            raise BadInput(f"manifest {path} row {n + 1}: metadata must be a JSON object")
        metadata.update(parsed)
    return metadata


def _manifest_rows(path: Path, unlabelled: bool) -> list[dict]:
    records = _manifest_table(path)
    if not records:
        raise BadInput(f"manifest {path} lists no images")
    columns = set(records[0])
    uri_column = "uri" if "uri" in columns else "path" if "path" in columns else None
    if uri_column is None or ("identity" not in columns and not unlabelled):
        raise BadInput(f"manifest {path} needs `uri` (or `path`) and `identity` columns (or --unlabelled for faces "
                       f"nobody has named); it has {sorted(columns)}")
    rows = []
    for n, record in enumerate(records):
        source = str(record[uri_column] or "")
        uri = source if "://" in source or not source or Path(source).is_absolute() else str(path.parent / source)
        face_key = str(record.get("face_id") or "") or source
        rows.append(_row(uri, str(record.get("identity") or ""), source, face_key, _metadata(record, path, n)))
    return rows


def list_source(source: str | Path, *, unlabelled: bool = False, strangers: bool = False) -> list[dict]:
    """Rows with uri, identity, source (what is stored), face_key (what the id derives from), metadata (JSON).

    `unlabelled`: a tree is every image under it, none named (identity UNLABELLED); a manifest may lack the
    identity column, and its rows without one are faces nobody has named (without the flag they are errors).
    `strangers`: the same, each face marked as nobody who will be enrolled (metadata STRANGER); a manifest row
    with an identity is then an error, as a stranger has none."""
    path = Path(source)
    if path.is_dir():
        rows = _unlabelled_tree_rows(path.resolve()) if unlabelled or strangers else _tree_rows(path.resolve())
    elif path.is_file() and path.suffix.lower() in MANIFEST_SUFFIXES:
        rows = _manifest_rows(path.resolve(), unlabelled or strangers)
    elif not path.exists():
        raise NotFound(f"{source} does not exist")
    else:
        raise BadInput(f"{source} is neither an image tree (a directory) nor a manifest (.csv or .parquet)")
    return [_as_stranger(row, path) for row in rows] if strangers else rows


def _as_stranger(row: dict, source: Path) -> dict:
    if row["identity"]:
        raise BadInput(f"{source}: {row['source']} is named {row['identity']!r}, but --strangers takes faces of "
                       f"nobody who will be enrolled: leave the identity empty")
    return {**row, "metadata": json.dumps({**json.loads(row["metadata"]), STRANGER: True}, ensure_ascii=False,
                                          default=str)}


def list_images(source: str | Path) -> list[LabelledImage]:
    """An image tree or a manifest as (path, identity) items, for training and evaluation."""
    return [LabelledImage(row["uri"], row["identity"]) for row in list_source(source) if not row["skip"]]


def write_manifest(path: str | Path, items: list[LabelledImage]) -> None:
    """A CSV manifest (path, identity) that list_source and list_images read back."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "identity"])
        writer.writerows((item.path, item.identity) for item in items)


def read_bytes(uri: str) -> bytes:
    """The bytes behind a local path or a filesystem URI; OSError when they cannot be read."""
    if "://" not in uri:
        return Path(uri).read_bytes()
    from pyarrow import fs

    try:
        filesystem, path = fs.FileSystem.from_uri(uri)
    except (ValueError, fs.ArrowInvalid) as exc:
        raise OSError(f"cannot open {uri}: {exc}") from exc
    with filesystem.open_input_file(path) as handle:
        return handle.read()


def unreadable(uri: str, exc: OSError) -> str:
    """Why a file could not be read, in a line; a link whose target is gone says so (a photo library moved)."""
    path = Path(uri) if "://" not in uri else None
    if path is not None and path.is_symlink() and not path.exists():
        return f"unreadable file: a link to {os.readlink(path)}, which is not there"
    return f"unreadable file: {exc.strerror or exc}"


def decode_or_skip(uri: str, spec: ModelSpec, **limits) -> tuple[np.ndarray | None, str]:
    """(image, "") or (None, reason): a missing, unreadable or corrupt file is a reason to skip, never a crash.

    `limits` are decode_image's max_pixels / min_side."""
    try:
        return refuse_flat(decode_image(read_bytes(uri), spec, **limits)), ""
    except ImageError as exc:
        return None, str(exc)
    except OSError as exc:
        return None, unreadable(uri, exc)


def photo_or_skip(uri: str, **limits) -> tuple[np.ndarray | None, str]:
    """(the full RGB photo, "") or (None, reason); `limits` are load_rgb's max_pixels / min_side."""
    from embedder.preprocess import load_rgb

    try:
        return load_rgb(read_bytes(uri), **limits), ""
    except ImageError as exc:
        return None, str(exc)
    except OSError as exc:
        return None, unreadable(uri, exc)


def faces_or_skip(uri: str, spec: ModelSpec, policy, **limits) -> tuple[list, str]:
    """(faces, "") or ([], reason): the photo at `uri` through a FacePolicy (embedder/faces.py): no face, too
    many, or an unreadable file is a reason to skip it. `limits` are load_rgb's max_pixels / min_side."""
    from embedder.preprocess import load_rgb

    try:
        return policy.prepare(load_rgb(read_bytes(uri), **limits), spec), ""
    except ImageError as exc:
        return [], str(exc)
    except OSError as exc:
        return [], unreadable(uri, exc)


@dataclass
class DecodedImages:
    """Decoded uint8 images with integer labels; `skipped` holds (path, reason) for what could not be read."""

    images: np.ndarray
    labels: np.ndarray
    classes: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)


def decode_items(items: list[LabelledImage], spec: ModelSpec, classes: list[str] | None = None,
                 policy=None) -> DecodedImages:
    """Every item decoded into memory with its label (training in memory, evaluation); bad files are skipped.

    For a spec with alignment "five_point" a FacePolicy finds and aligns the face (its selection rule decides
    which face of a photo counts; "largest" suits labelled photos of one person)."""
    classes = classes if classes is not None else sorted({item.identity for item in items})
    index = {name: i for i, name in enumerate(classes)}
    images, labels, skipped = [], [], []
    for item in items:
        if policy is not None and spec.alignment != "none":
            faces, reason = faces_or_skip(item.path, spec, policy)
            image = faces[0].chip if faces else None
        else:
            image, reason = decode_or_skip(item.path, spec)
        if image is None:
            skipped.append((item.path, reason))
        else:
            images.append(image)
            labels.append(index[item.identity])
    height, width = spec.input_size
    stacked = np.stack(images) if images else np.zeros((0, height, width, 3), np.uint8)
    return DecodedImages(stacked, np.asarray(labels, dtype=np.int64), classes, skipped)
