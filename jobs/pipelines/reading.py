"""How a new model reads a gallery's face archive: the same reading for the dry run, the bulk copy and the
catch-up rounds of `arcmatch reembed`, so that what the dry run counts is what the copy gets.

A whole kind of archived face can be out of the new model's reach (aligned faces for a box-crop model): one entry
of each kind present is read first, and a kind that fails as a kind (ModelError) is refused before any work.
Past that, each face succeeds or fails on its own (a photo whose face is not found inside the old model's crop
box, or is under the quality gate, or needs a detector that is not configured, where another photo carries the
landmarks found at archiving): the dry run reads every pending face to say exactly which.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass

import numpy as np

from embedder.archiving import model_input
from embedder.errors import ImageError, ModelError
from embedder.faces import FacePolicy
from embedder.spec import ModelSpec
from indexer.archive import FaceArchive
from indexer.store import FaceRow

Skipped = tuple[int, str, str, str]  # (face id, identity, source, reason): one row of the errors CSV
SKIPPED_HEADER = ("face_id", "identity", "source", "reason")


@dataclass(frozen=True)
class Reader:
    """The new model's spec, the face policy for photos that need their face found (detector and gate as
    ingestion uses them), and the crop box of the model that archived them (the face that was in the gallery)."""

    spec: ModelSpec
    policy: FacePolicy | None = None
    box: tuple[float, float, float, float] | None = None

    def read(self, data: bytes, kind: str) -> np.ndarray:
        return model_input(data, kind, self.spec, self.policy, self.box)

    def decode(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """CPU stage: archived faces -> the new model's input; one that cannot be read gets an `error`."""
        images, errors = [], []
        blank = np.zeros((*self.spec.input_size, 3), dtype=np.uint8)
        for data, kind in zip(batch["image"], batch["kind"], strict=True):
            try:
                images.append(self.read(bytes(data), str(kind)))
                errors.append("")
            except (ImageError, ModelError) as exc:
                images.append(blank)
                errors.append(str(exc))
        out = {k: batch[k] for k in ("face_id", "identity", "source", "metadata")}
        return {**out, "error": np.asarray(errors, dtype=object),
                "image": np.stack(images) if images else blank[None][:0]}


def refused_kinds(kept: FaceArchive, described: dict[int, tuple[str, str, str]], reader: Reader) -> dict[str, str]:
    """kind -> why the new model cannot read any face of it, by reading one entry of each kind present."""
    first: dict[str, int] = {}
    for face, (kind, _, _) in described.items():
        first.setdefault(kind, face)
    refused = {}
    for kind, face in first.items():
        entry = next(kept.entries({face}), None)
        if entry is None:
            continue  # deleted since the plan read it
        try:
            reader.read(entry.image, entry.kind)
        except ModelError as exc:
            refused[kind] = str(exc)
        except ImageError:
            pass  # this face only: the others of its kind are read one by one
    return refused


def rows_of(batch: dict[str, np.ndarray]) -> tuple[list[FaceRow], list[Skipped]]:
    """Embedded rows to write, and the faces that could not be read with their reason."""
    rows, skipped = [], []
    for i in range(len(batch["face_id"])):
        face = int(batch["face_id"][i])
        if batch["error"][i]:
            skipped.append((face, str(batch["identity"][i]), str(batch["source"][i]), str(batch["error"][i])))
            continue
        rows.append(FaceRow(str(batch["source"][i]), str(batch["identity"][i]), batch["vector"][i], face,
                            json.loads(str(batch["metadata"][i]) or "{}")))
    return rows, skipped


def decoded(kept: FaceArchive, pending: dict[int, int], reader: Reader, batch_size: int):
    """The Ray dataset of the pending faces (face id -> archived version) read for the new model: archive parts
    read on CPU tasks, the live versions kept, each face decoded (and its face found) there."""
    import pyarrow as pa
    import ray
    import ray.data

    wanted = ray.put(pending)

    def keep_live(table: pa.Table) -> pa.Table:
        versions = ray.get(wanted)
        mask = [versions.get(f) == ns for f, ns in zip(table["face_id"].to_pylist(),
                                                      table["written_ns"].to_pylist(), strict=True)]
        return table.filter(pa.array(mask, pa.bool_())) if table.num_rows else table

    ds = ray.data.read_parquet(kept.parts("faces"), filesystem=kept.fs)
    ds = ds.map_batches(keep_live, batch_format="pyarrow")
    return ds.map_batches(reader.decode, batch_size=batch_size, batch_format="numpy")


def unreadable(kept: FaceArchive, pending: dict[int, int], reader: Reader, batch_size: int, bar) -> list[Skipped]:
    """The dry run's answer: every pending face read as the copy will read it, without embedding; the ones that
    fail, with their reasons (each face once, as the copy writes it once)."""
    if not pending:
        return []
    failed, seen = {}, set()
    for batch in decoded(kept, pending, reader, batch_size).iter_batches(batch_size=256, batch_format="numpy"):
        for i, face in enumerate(int(f) for f in batch["face_id"]):
            if face not in seen:
                seen.add(face)
                if batch["error"][i]:
                    failed[face] = (face, str(batch["identity"][i]), str(batch["source"][i]), str(batch["error"][i]))
        bar.update(len(batch["face_id"]), note=f"{len(failed)} cannot be read")
    return sorted(failed.values())


def why(skipped: list[Skipped], never_archived: int = 0) -> str:
    """'3 never archived, 2 no face found inside the crop box ...': the reasons of faces left behind, counted."""
    from jobs.pipelines.report import reasons

    counted = ([f"{never_archived} never archived (enrolled before the archive existed)"] if never_archived else [])
    return ", ".join(counted + [f"{n} {reason}" for reason, n in reasons(skipped).most_common()])


def kind_counts(described: dict[int, tuple[str, str, str]]) -> dict[str, int]:
    return dict(Counter(kind for kind, _, _ in described.values()).most_common())


@dataclass(frozen=True)
class Plan:
    """What a pass over archived faces will read (a re-embed's copy, a restore): the faces by archived kind, the
    kinds this model reads none of (kind -> why), those faces as skipped, and the faces to read (face -> version)."""

    kinds: dict[str, int]
    refused_kinds: dict[str, str]
    skipped: list[Skipped]
    readable: dict[int, int]


def plan(kept: FaceArchive, pending: dict[int, int], reader: Reader) -> Plan:
    """The Plan for the archived faces `pending` (face id -> the version to read), without reading an image
    but one of each kind."""
    described = kept.describe(pending)
    refused = refused_kinds(kept, described, reader)
    skipped = [(face, identity, source, refused[kind]) for face, (kind, identity, source) in sorted(described.items())
               if kind in refused]
    readable = {face: pending[face] for face, (kind, _, _) in described.items() if kind not in refused}
    return Plan(kind_counts(described), refused, skipped, readable)
