"""Writing embedded rows into Milvus: from the driver (Milvus Lite, one writer) or from Ray's write tasks (a
server takes parallel upserts). Both skip a row Milvus refuses with its reason instead of failing the job."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import numpy as np

from indexer.archive import FaceArchive
from indexer.ids import face_id
from indexer.store import FaceIndex, FaceRow, connect
from indexer.writer import FaceImage, GalleryWriter, Stored

try:  # the sink subclasses Ray's Datasink; the rest of this module (and its tests) work without Ray
    from ray.data import Datasink
except ImportError:  # pragma: no cover
    Datasink = object


def rows_from_batch(batch: dict[str, np.ndarray], unlabelled: bool = False) -> tuple[list[FaceRow],
                                                                                    list[tuple[str, str]]]:
    """Embedded rows to write, and (source, reason) for the ones that failed upstream. Rows without an identity
    are faces nobody has named (UNLABELLED) when `unlabelled`, else skipped: a labelled manifest's empty cell is
    a mistake to report, not a face to keep without its name."""
    rows, skipped = [], []
    for i in range(len(batch["source"])):
        source, error = str(batch["source"][i]), str(batch["error"][i])
        if error:
            skipped.append((source, error))
        elif not str(batch["identity"][i]).strip() and not unlabelled:
            skipped.append((source, "no identity: the manifest row has an empty identity"))
        else:
            rows.append(FaceRow(source, str(batch["identity"][i]).strip(), batch["vector"][i],
                                face_id(str(batch["face_key"][i])), json.loads(str(batch["metadata"][i]))))
    return rows, skipped


def images_from_batch(batch: dict[str, np.ndarray], rows: list[FaceRow]) -> dict[int, FaceImage]:
    """What the archive keeps of the rows about to be written (the batch carries their images in `kept`)."""
    by_id = {face_id(str(key)): n for n, key in enumerate(batch["face_key"])}
    return {row.face_id: FaceImage(str(batch["kept_kind"][n]), bytes(batch["kept"][n]))
            for row in rows if batch["kept_kind"][n := by_id[row.face_id]]}


def keep_rejections(writer: GalleryWriter, rows: list[FaceRow], skipped: list[tuple[str, str]],
                    stored: Stored | None = None) -> list[FaceRow]:
    """The rows an ingestion may write without undoing a person's "not this person" (indexer/writer.py).

    Why: a face's id derives from its photo, so ingesting the same named tree again meets the faces a person has
    since taken out of that identity (unlabelled now, or named someone else since). Such a row is skipped with the
    reason (enrolling the photo with `proceed` is how to put it back); every other row carries the face's stored
    rejections, so the upsert does not erase them. `stored`: the rows' records already read (GalleryWriter.stored)."""
    kept = []
    for row, rejected, merged_into in writer.check_records(rows, strong=False, stored=stored):
        if rejected:
            skipped.append((row.source, f"rejected from {row.identity!r} (not this person): enroll the photo "
                                        "with proceed to put it back"))
        elif merged_into is not None:
            skipped.append((row.source, f"{row.identity!r} was merged into {merged_into!r} (one person): kept "
                                        f"there; `arcmatch gallery move` puts a face back"))
        else:
            kept.append(row)
    return kept


def keep_deleted_out(rows: list[FaceRow], deleted: Mapping[int, int] | None,
                     skipped: list[tuple[str, str]]) -> list[FaceRow]:
    """The rows whose face was not deleted from the gallery. A face's id derives from its photo, so ingesting a
    tree again reaches the faces deleted since (a person erased through the API, a wrong photo taken out): a QA
    pass saw an erased person back in the gallery after the folder was ingested again. Such a row is skipped with
    the reason; `deleted` (FaceArchive.deleted_ids, read once a job) is None where the caller asked to take them
    back, or keeps no archive to know them by."""
    if not deleted:
        return rows
    kept = []
    for row in rows:
        when = deleted.get(row.face_id)
        if when is None:
            kept.append(row)
        else:
            day = time.strftime("%Y-%m-%d", time.gmtime(when / 1e9))
            skipped.append((row.source, f"deleted from the gallery (on {day}): not ingested again; "
                                        "--include-deleted brings it back"))
    return kept


# a face id that holds a face this close to the row's is the row's own photo, ingested before, and one below it
# another photo that only shares the path (two event folders that each hold IMG_0001.jpg). The same photo through
# the same model gives the same vector, re-embedded from the archive too: 85 LFW-gray faces moved from a box-crop
# model to a five-point one by `reembed`, against the same photos ingested afresh, scored 1.0000 at the least
SAME_PHOTO = 0.95
PROBES = 32  # ids tried for a photo whose path is taken: as many photos of one path as any tree would hold


def apart_from_other_photos(writer: GalleryWriter, rows: list[FaceRow], stored: Stored,
                            apart: list[str] | None = None) -> tuple[list[FaceRow], Stored]:
    """The rows, each under an id of its own photo. A face's id derives from its path in the tree (so a tree
    ingested again adds nothing twice), and a row whose id already holds another photo would overwrite that face:
    a QA pass lost one of two unlabelled photos named alike in two folders. Such a row takes the first of a fixed
    sequence of ids derived from its path's (the same on every run, whatever the model) that is free or holds
    this photo, and its source goes to `apart`. Returns the rows and their stored records, read again for the
    ids that changed."""
    clashing = [r for r in rows if r.face_id in stored]
    if not clashing:
        return rows, stored
    held = writer.index.vectors([r.face_id for r in clashing])
    moved = {r.face_id: r for r in clashing if r.face_id in held and not _same_photo(r.vector, held[r.face_id])}
    if not moved:
        return rows, stored
    chosen: dict[int, int] = {}
    for probe in range(1, PROBES + 1):
        waiting = [old for old in moved if old not in chosen]
        if not waiting:
            break
        candidates = {old: face_id(f"{old}/{probe}") for old in waiting}
        taken = writer.index.vectors(list(candidates.values()))
        for old, new in candidates.items():
            if new not in taken or _same_photo(moved[old].vector, taken[new]):
                chosen[old] = new
    if apart is not None:
        apart += [moved[old].source for old in chosen]
    rows = [replace(r, face_id=chosen[r.face_id]) if r.face_id in chosen else r for r in rows]
    return rows, {**stored, **writer.stored([r for r in rows if r.face_id in chosen.values()], strong=False)}


def _same_photo(a: np.ndarray, b: np.ndarray) -> bool:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12)) >= SAME_PHOTO


def write_rows(writer: GalleryWriter, batch: dict[str, np.ndarray], rows: list[FaceRow],
               skipped: list[tuple[str, str]], *, curated: bool,
               apart: list[str] | None = None, deleted: Mapping[int, int] | None = None) -> tuple[list[FaceRow], int]:
    """One batch through the gallery's writer (archive, then the store), by both ingestion paths; returns the rows
    it tried and how many were written. `curated` (an ingestion): each photo under an id of its own
    (apart_from_other_photos, the sources moved into `apart`), the faces deleted from the gallery left out
    (keep_deleted_out), and the faces' "not this person" kept (keep_rejections)."""
    kept = images_from_batch(batch, rows) if writer.archive is not None else None
    stored = writer.stored(rows, strong=False) if curated else None  # one read for both checks
    if curated:
        before = [r.face_id for r in rows]
        rows, stored = apart_from_other_photos(writer, rows, stored, apart)
        if kept:  # the images follow their rows to the ids they took
            kept = {new.face_id: kept[old] for old, new in zip(before, rows, strict=True) if old in kept}
        rows = keep_rejections(writer, keep_deleted_out(rows, deleted, skipped), skipped, stored)
        if kept:
            kept = {r.face_id: kept[r.face_id] for r in rows if r.face_id in kept}
    if kept:  # a tree ingested again: its unchanged faces are in the archive already, as they are
        same = writer.archived_as(rows, kept, stored)
        kept = {face: image for face, image in kept.items() if face not in same}
    return rows, writer.write(rows, kept, skipped=skipped)


class MilvusDatasink(Datasink):
    """Upserts each write task's rows into a Milvus server; the driver sums what each task returns."""

    def __init__(self, uri: str, token: str | None, collection: str, archive: str | None = None, *,
                 gallery: str | None = None, rows=None, curated: bool = False,
                 deleted: Mapping[int, int] | None = None) -> None:
        import pymilvus  # noqa: F401  (fail on the driver, before any task is scheduled)

        self.rows = rows or rows_from_batch  # batch -> (rows, skipped); a re-embed's batches carry face ids
        self.uri, self.token, self.collection, self.archive = uri, token, collection, archive
        self.gallery = gallery or collection  # the archive is the gallery's, whatever model's collection
        self.curated = curated  # an ingestion: keep the faces' "not this person" (keep_rejections)
        self.deleted = deleted  # an ingestion: the faces deleted from the gallery (keep_deleted_out)
        self.embedded = 0
        self.skipped: list[tuple[str, str]] = []
        self.apart: list[str] = []  # sources kept apart from another photo of their path (apart_from_other_photos)

    def write(self, blocks, ctx) -> dict:
        from ray.data.block import BlockAccessor

        index = FaceIndex(connect(self.uri, self.token), self.collection)
        writer = GalleryWriter(index, FaceArchive(self.archive, self.gallery) if self.archive is not None else None)
        embedded, skipped, apart = 0, [], []
        for block in blocks:
            batch = BlockAccessor.for_block(block).to_numpy()
            rows, failed = self.rows(batch)
            skipped += failed
            embedded += write_rows(writer, batch, rows, skipped, curated=self.curated, apart=apart,
                                   deleted=self.deleted)[1]
        index.client.close()
        return {"embedded": embedded, "skipped": skipped, "apart": apart}

    def on_write_complete(self, write_result) -> None:
        for result in write_result.write_returns:
            self.embedded += result["embedded"]
            self.skipped += [tuple(s) for s in result["skipped"]]
            self.apart += result.get("apart", [])


class ParquetExport:
    """The embedded rows also written to one Parquet file (face_id, identity, source, vector), batch by batch."""

    def __init__(self, path: str | Path) -> None:
        self.path, self.writer = str(path), None

    def write(self, rows: list[FaceRow]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not rows:
            return
        dim = len(rows[0].vector)
        table = pa.table({
            "face_id": pa.array([r.face_id for r in rows], pa.int64()),
            "identity": [r.identity for r in rows],
            "source": [r.source for r in rows],
            "vector": pa.array([np.asarray(r.vector, np.float32).tolist() for r in rows],
                               pa.list_(pa.float32(), dim)),
        })
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.path, table.schema)
        self.writer.write_table(table)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
