"""Bulk gallery ingestion: list -> read and decode on CPU tasks -> embed on an actor pool -> upsert into Milvus.

Decoding and embedding are Ray Data stages, so a cluster spreads them over its CPUs and GPUs. Writing depends on
the store (jobs/pipelines/sink.py): a Milvus server takes parallel upserts from a Ray Datasink, while Milvus Lite
opens its file from one process only, so there the driver is the single writer. Face ids derive from the
caller's face id or the source (a tree's relative path, a manifest's uri), so a re-run after a crash upserts the
same rows and leaves no duplicates. Unreadable images are skipped, reported with their reason and counted; they
never stop the job.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from embedder.archiving import kept_face
from embedder.errors import ImageError, ModelError, NoFace
from embedder.faces import FacePolicy, check_named, face_record
from embedder.preprocess import box_face
from embedder.sources import decode_or_skip, faces_or_skip, list_source, photo_or_skip
from embedder.spec import ModelSpec
from indexer.archive import FaceArchive
from indexer.errors import ModelMismatch
from indexer.galleries import Galleries
from indexer.store import CollectionInfo, FaceIndex, connect, is_lite_uri
from indexer.writer import GalleryWriter
from jobs.pipelines.report import reasons, write_error_report
from jobs.pipelines.sink import MilvusDatasink, ParquetExport, rows_from_batch, write_rows
from jobs.progress import Console, silent


@dataclass
class IngestSummary:
    seen: int = 0
    embedded: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    apart: list[str] = field(default_factory=list)  # photos whose path another photo in the gallery had already
    rows_in_collection: int = 0
    seconds: float = 0.0
    write_seconds: float = 0.0  # time spent in Milvus upserts (driver-writer path)

    def lines(self) -> list[str]:
        rate = self.embedded / self.seconds if self.seconds else 0.0
        # a photo may give several faces (a group photo, unlabelled): faces are what is embedded and stored
        out = [f"images seen {self.seen}, faces embedded {self.embedded}, skipped {len(self.skipped)}",
               f"rows in collection {self.rows_in_collection}, {rate:.1f} faces/s over {self.seconds:.1f} s"]
        out += [f"  skipped ({reason}): {n}" for reason, n in reasons(self.skipped).most_common()]
        if self.apart:  # written, each as a face of its own: said, as a second tree may be a mistake
            shown = ", ".join(self.apart[:3]) + (", ..." if len(self.apart) > 3 else "")
            out.append(f"{len(self.apart)} photo(s) share their path in the tree with another photo already in the "
                       f"gallery ({shown}): each kept as a face of its own, none overwritten")
        return out


def decode_batch(batch: dict[str, np.ndarray], spec: ModelSpec, policy: FacePolicy | None = None,
                 archive: bool = False, max_pixels: int | None = None) -> dict[str, np.ndarray]:
    """CPU stage: read each photo and turn it into the model's input; a failure becomes an `error` string and a
    blank image. With a FacePolicy (models that want aligned faces) a photo becomes its face(s): one row per face,
    keyed `<face_key>#<n>` when one photo gives several, with where the face is and its quality in the metadata.
    With `archive`, each face's model-independent image (embedder/archiving.py) rides along, PNG-encoded, in
    `kept` / `kept_kind`, for the face archive (for a box-crop model with a detector in the policy, with the face
    located in its box, so that a five-point model can take the gallery over without detecting it again)."""
    columns: dict[str, list] = {k: [] for k in ("identity", "source", "face_key", "metadata", "image", "error",
                                                "kept", "kept_kind", "first_face")}
    blank = np.zeros((*spec.input_size, 3), dtype=np.uint8)
    photos: set[int] = set()
    limits = {} if max_pixels is None else {"max_pixels": max_pixels}  # ARCMATCH_MAX_PIXELS, as a search reads it

    def add(i: int, image: np.ndarray | None, error: str, key: str, metadata: str, kept=None) -> None:
        columns["first_face"].append(i not in photos)  # the row a photo is counted by (photos_in)
        photos.add(i)
        for name in ("identity", "source"):
            columns[name].append(batch[name][i])
        columns["face_key"].append(key)
        columns["metadata"].append(metadata)
        columns["image"].append(blank if image is None else image)
        columns["error"].append(error)
        columns["kept"].append(kept[0] if kept is not None else b"")
        columns["kept_kind"].append(kept[1] if kept is not None else "")

    for i, uri in enumerate(batch["uri"]):
        key, metadata = str(batch["face_key"][i]), str(batch["metadata"][i])
        if "skip" in batch and batch["skip"][i]:  # the listing knew already (sources._row)
            add(i, None, str(batch["skip"][i]), key, metadata)
            continue
        if policy is None or spec.alignment == "none":
            if not archive:
                image, reason = decode_or_skip(str(uri), spec, **limits)
                add(i, image, reason, key, metadata)
                continue
            photo, reason = photo_or_skip(str(uri), **limits)
            try:
                chip = box_face(photo, spec) if photo is not None else None
            except NoFace as exc:
                chip, reason = None, str(exc)
            if chip is None:
                add(i, None, reason, key, metadata)
            else:
                add(i, chip, "", key, metadata, kept_face(photo, None, spec, policy))
            continue
        photo, reason = photo_or_skip(str(uri), **limits) if archive else (None, "")
        if archive and photo is None:
            faces = []
        elif archive:
            faces, reason = prepare_or_skip(photo, spec, policy)
        else:
            faces, reason = faces_or_skip(str(uri), spec, policy, **limits)
        if not faces:
            add(i, None, reason, key, metadata)
        for n, face in enumerate(faces):
            extra = json.dumps({**json.loads(metadata), "face": face_record(face)}, ensure_ascii=False)
            add(i, face.chip, "", f"{key}#{n}" if len(faces) > 1 else key, extra,
                kept_face(photo, face, spec, policy) if archive else None)
    out = {k: np.asarray(v, dtype=object) for k, v in columns.items() if k != "image"}
    return {**out, "image": np.stack(columns["image"]) if columns["image"] else blank[None][:0]}


def photos_in(batch: dict) -> int:
    """The photos a batch of faces came from, for a bar counted in photos: a photo that gave several faces counts
    once, by its first row (decode_batch's `first_face`; not by its key's `#0`, which a source may end with too)."""
    return int(np.asarray(batch["first_face"], bool).sum())


def prepare_or_skip(photo: np.ndarray, spec: ModelSpec, policy: FacePolicy) -> tuple[list, str]:
    try:
        return policy.prepare(photo, spec), ""
    except ImageError as exc:
        return [], str(exc)


class EmbedBatch:
    """Actor stage: the model is loaded once per actor (on its GPU when it has one) and reused for every batch."""

    def __init__(self, model: str, threads: int | None = None) -> None:
        import ray

        from embedder.embed import open_embedder

        # ray.get_gpu_ids(), not torch.cuda: an ONNX model then never imports torch (seconds per actor)
        self.embedder = open_embedder(model, device="cuda" if ray.get_gpu_ids() else "cpu", threads=threads)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ok = batch["error"] == ""
        vectors = np.zeros((len(ok), self.embedder.spec.embedding_size), dtype=np.float32)
        if ok.any():
            vectors[ok] = self.embedder.embed(batch["image"][ok])
        out = {k: v for k, v in batch.items() if k != "image"}  # what the stage before gave, the image embedded
        return {**out, "vector": vectors}


def ingest(
    source: str | Path,
    model: str | Path,
    *,
    milvus: str,
    token: str | None = None,
    gallery: str = "faces",
    batch_size: int = 64,
    embed_concurrency: int = 1,
    cpus_per_actor: float = 1.0,
    threads_per_actor: int | None = None,
    gpus_per_actor: float | None = None,
    write_batch: int = 512,
    write_concurrency: int | None = None,
    index_type: str = "HNSW",
    errors_csv: str | Path | None = None,
    export_parquet: str | Path | None = None,
    policy: FacePolicy | None = None,
    archive: str | None = None,
    unlabelled: bool = False,
    strangers: bool = False,
    max_pixels: int | None = None,
    include_deleted: bool = False,
    console: Console | None = None,
) -> IngestSummary:
    """Embed `source` with `model` (an arcmatch checkpoint or an ONNX model) into gallery `gallery` at `milvus`
    (an alias; the vectors go to this model's collection behind it).

    `policy` turns photos into faces for a model whose spec wants aligned faces (detection, quality gate, how
    many faces a photo may give); it is required for such a model and unused otherwise. `archive` (a path or
    URI) keeps every face's image in the gallery's face archive (indexer/archive.py), written before its
    vector, so that the next model can embed the gallery again. `unlabelled` takes faces nobody has named (a tree
    of any shape, or a manifest's rows without an identity): stored with identity UNLABELLED, never a search's
    answer, grouped by `arcmatch cluster`. `strangers`: the same, each marked as nobody who will be enrolled (a
    public photo set, visitors): calibration takes them as strangers as they are (indexer/strangers.py).
    A photo whose face was deleted from the gallery (the archive keeps its tombstone) is skipped with the reason
    unless `include_deleted`: deleting a person must outlast the next run over the tree that held them."""
    import ray
    import ray.data

    from embedder.embed import open_embedder

    started, console = time.perf_counter(), console or silent()
    if not (unlabelled or strangers):
        check_named(policy.select if policy is not None else None)
    embedder = open_embedder(model)  # on the driver too: a bad model fails here, not in every actor
    spec, calibration = embedder.spec, embedder.calibration
    if spec.alignment != "none" and (policy is None or policy.detector is None):
        raise ModelError(f"the model wants {spec.alignment} aligned faces: give a face detector (ARCMATCH_DETECTOR)")
    galleries = Galleries(connect(milvus, token), gallery)
    index = galleries.open(  # the collection of this model behind the alias
        CollectionInfo.of_calibrated(spec, calibration), create=True,
        index_type=index_type)
    _check_served(GalleryWriter(index, None, galleries), spec.version)
    items = list_source(source, unlabelled=unlabelled, strangers=strangers)
    rows_of = partial(rows_from_batch, unlabelled=unlabelled or strangers)
    summary = IngestSummary(seen=len(items))
    if gpus_per_actor is None:  # embed on GPUs whenever the cluster has them
        gpus_per_actor = 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
    ds = ray.data.from_items(items)
    ds = ds.map_batches(decode_batch, fn_kwargs={"spec": spec, "policy": policy, "archive": archive is not None,
                                                 "max_pixels": max_pixels},
                        batch_size=batch_size,
                        batch_format="numpy")
    ds = ds.map_batches(EmbedBatch, fn_constructor_args=(str(model), threads_per_actor), batch_size=batch_size,
                        batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=embed_concurrency),
                        num_cpus=cpus_per_actor, num_gpus=gpus_per_actor)
    kept = FaceArchive(archive, gallery) if archive is not None else None
    deleted = kept.deleted_ids() if kept is not None and not include_deleted else None
    if export_parquet is not None or is_lite_uri(milvus):
        with console.stage("ingest", total=summary.seen) as bar:
            _write_from_driver(ds, index, summary, write_batch, export_parquet, bar, kept, rows_of, galleries,
                               deleted)
    else:
        index.client.close()
        sink = MilvusDatasink(milvus, token, index.collection, archive, gallery=gallery, rows=rows_of,
                              curated=True, deleted=deleted)
        with console.timed("ingest"):
            console.say(f"ingest: embedding {summary.seen} images with parallel writers")
            ds.write_datasink(sink, concurrency=write_concurrency)
        summary.embedded, summary.skipped, summary.apart = sink.embedded, sink.skipped, sink.apart
        index = FaceIndex(connect(milvus, token), index.collection)
    index.flush()
    summary.rows_in_collection = index.count()
    index.client.close()
    summary.seconds = time.perf_counter() - started
    if errors_csv is not None:
        write_error_report(errors_csv, summary.skipped)
    return summary


def _check_served(fence: GalleryWriter, version: str) -> None:
    """Refuse, before anything is embedded, to write a model's collection that the gallery no longer serves (a
    re-embed moved it to another model): its faces would be answered by no search, and no later command would
    bring them over. A re-embed's own target, while the old collection still serves, takes writes."""
    fence.refresh(max_age_s=0.0)
    if not fence.writable:
        other = FaceIndex(fence.index.client, fence.serving).info().model_version
        raise ModelMismatch(f"gallery {fence.galleries.gallery!r} is served by model {other} since a re-embed, not "
                            f"{version}: faces ingested with this model would be answered by no search; ingest "
                            f"with the model it serves (--model), or `arcmatch alias rollback` first")


def _write_from_driver(ds, index: FaceIndex, summary: IngestSummary, write_batch: int,
                       export_parquet: str | Path | None, bar, archive: FaceArchive | None, rows_of,
                       galleries: Galleries | None = None, deleted: dict[int, int] | None = None) -> None:
    """The single-writer path (Milvus Lite, or when the vectors are also exported to Parquet)."""
    export = ParquetExport(export_parquet) if export_parquet is not None else None
    writer = GalleryWriter(index, archive, galleries)  # the fence holds through the run: a switch stops it
    try:
        for batch in ds.iter_batches(batch_size=write_batch, batch_format="numpy"):
            rows, skipped = rows_of(batch)
            summary.skipped += skipped
            write_started = time.perf_counter()
            rows, written = write_rows(writer, batch, rows, summary.skipped, curated=True, apart=summary.apart,
                                       deleted=deleted)
            summary.embedded += written
            summary.write_seconds += time.perf_counter() - write_started
            if export is not None:
                export.write(rows)
            bar.update(photos_in(batch), note=f"{summary.embedded} written")
            bar.skips(len(summary.skipped))
    finally:
        if export is not None:
            export.close()
