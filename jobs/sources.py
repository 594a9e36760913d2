"""What to ingest: an image tree or a manifest (CSV or Parquet), as uniform rows; and reading their bytes.

A manifest row has `uri` (or `path`) and `identity`, optionally `face_id` (the caller's own id, which then keys
the row) and `metadata` (a JSON object); any other column is kept as a metadata string. URIs are local paths,
file:// or anything pyarrow's filesystems open (s3://, gs://, hdfs://).
"""

from __future__ import annotations

import json
from pathlib import Path

from trainer.data import list_image_tree

RESERVED = {"uri", "path", "identity", "face_id", "metadata"}


def _row(uri: str, identity: str, source: str, face_key: str, metadata: dict) -> dict:
    return {"uri": uri, "identity": identity, "source": source, "face_key": face_key,
            "metadata": json.dumps(metadata, ensure_ascii=False, default=str)}


def _tree_rows(root: Path) -> list[dict]:
    rows = []
    for item in list_image_tree(root):
        relative = Path(item.path).relative_to(root).as_posix()  # stable if the tree moves
        rows.append(_row(item.path, item.identity, relative, relative, {}))
    return rows


def _manifest_table(path: Path) -> list[dict]:
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    import pyarrow.csv as pacsv

    options = pacsv.ConvertOptions(strings_can_be_null=False, column_types={"identity": "string",
                                                                            "face_id": "string"})
    return pacsv.read_csv(path, convert_options=options).to_pylist()


def _manifest_rows(path: Path) -> list[dict]:
    records = _manifest_table(path)
    if not records:
        raise ValueError(f"manifest {path} lists no images")
    columns = set(records[0])
    uri_column = "uri" if "uri" in columns else "path" if "path" in columns else None
    if uri_column is None or "identity" not in columns:
        raise ValueError(f"manifest {path} needs `uri` (or `path`) and `identity` columns; it has {sorted(columns)}")
    rows = []
    for n, record in enumerate(records):
        uri = str(record[uri_column] or "")
        if "://" not in uri and uri and not Path(uri).is_absolute():
            uri = str(path.parent / uri)
        metadata = {k: v for k, v in record.items() if k not in RESERVED and v is not None}
        raw = record.get("metadata")
        if raw:
            try:
                parsed = json.loads(raw) if isinstance(raw, str) else raw
            except json.JSONDecodeError as exc:
                raise ValueError(f"manifest {path} row {n + 1}: metadata is not JSON: {exc}") from exc
            if not isinstance(parsed, dict):
                raise ValueError(f"manifest {path} row {n + 1}: metadata must be a JSON object")
            metadata.update(parsed)
        source = str(record[uri_column] or "")
        face_key = str(record.get("face_id") or "") or source
        rows.append(_row(uri, str(record["identity"] or ""), source, face_key, metadata))
    return rows


def list_source(source: str | Path) -> list[dict]:
    """Rows with uri, identity, source (what is stored), face_key (what the id derives from), metadata (JSON)."""
    path = Path(source)
    if path.is_dir():
        return _tree_rows(path.resolve())
    if path.is_file() and path.suffix.lower() in (".csv", ".parquet"):
        return _manifest_rows(path.resolve())
    if not path.exists():
        raise FileNotFoundError(f"{source} does not exist")
    raise ValueError(f"{source} is neither an image tree (a directory) nor a manifest (.csv or .parquet)")


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
