"""Bulk gallery ingestion: list -> read and decode on CPU tasks -> embed on an actor pool -> upsert into Milvus.

Decoding and embedding are Ray Data stages, so a cluster spreads them over its CPUs and GPUs. Writing depends on
the store: a Milvus server takes parallel upserts from a Ray Datasink (one client per write task), while Milvus
Lite opens its file from one process only, so there the driver is the single writer. Face ids derive from the
caller's face id or the source (a tree's relative path, a manifest's uri), so a re-run after a crash upserts the
same rows and leaves no duplicates. Unreadable images are skipped, reported with their reason and counted; they
never stop the job.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from embedder.errors import ImageError
from embedder.preprocess import decode_image
from embedder.spec import ModelSpec
from indexer.errors import InvalidValue
from indexer.ids import face_id
from indexer.store import CollectionInfo, FaceIndex, FaceRow, connect, is_lite_uri
from jobs.errors import write_error_report
from jobs.sources import list_source, read_bytes

try:  # the sink subclasses Ray's Datasink; the rest of this module (and its tests) work without Ray
    from ray.data import Datasink
except ImportError:  # pragma: no cover
    Datasink = object


@dataclass
class IngestSummary:
    seen: int = 0
    embedded: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    rows_in_collection: int = 0
    seconds: float = 0.0
    write_seconds: float = 0.0  # time spent in Milvus upserts (driver-writer path)

    def skipped_by_reason(self) -> Counter:
        return Counter(reason.split(":")[0] for _, reason in self.skipped)

    def lines(self) -> list[str]:
        rate = self.embedded / self.seconds if self.seconds else 0.0
        out = [f"images seen {self.seen}, embedded {self.embedded}, skipped {len(self.skipped)}",
               f"rows in collection {self.rows_in_collection}, {rate:.1f} images/s over {self.seconds:.1f} s"]
        out += [f"  skipped ({reason}): {n}" for reason, n in self.skipped_by_reason().most_common()]
        return out


def decode_batch(batch: dict[str, np.ndarray], spec: ModelSpec) -> dict[str, np.ndarray]:
    """CPU stage: read and decode each image; a failure becomes an `error` string and a blank image."""
    height, width = spec.input_size
    images = np.zeros((len(batch["uri"]), height, width, 3), dtype=np.uint8)
    errors = []
    for i, uri in enumerate(batch["uri"]):
        try:
            images[i] = decode_image(read_bytes(str(uri)), spec)
            errors.append("")
        except ImageError as exc:
            errors.append(str(exc))
        except OSError as exc:
            errors.append(f"unreadable file: {exc.strerror or exc}")
    out = {k: batch[k] for k in ("identity", "source", "face_key", "metadata")}
    return {**out, "image": images, "error": np.asarray(errors, dtype=object)}


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
        out = {k: batch[k] for k in ("identity", "source", "face_key", "metadata", "error")}
        return {**out, "vector": vectors}


def rows_from_batch(batch: dict[str, np.ndarray]) -> tuple[list[FaceRow], list[tuple[str, str]]]:
    """Embedded rows to write, and (source, reason) for the ones that failed upstream."""
    rows, skipped = [], []
    for i in range(len(batch["source"])):
        source, error = str(batch["source"][i]), str(batch["error"][i])
        if error:
            skipped.append((source, error))
        elif not str(batch["identity"][i]).strip():
            skipped.append((source, "no identity: the manifest row has an empty identity"))
        else:
            rows.append(FaceRow(source, str(batch["identity"][i]), batch["vector"][i],
                                face_id(str(batch["face_key"][i])), json.loads(str(batch["metadata"][i]))))
    return rows, skipped


def _upsert_checked(index: FaceIndex, rows: list[FaceRow], skipped: list[tuple[str, str]]) -> int:
    """Upsert a batch; a row Milvus refuses (an invalid identity) is skipped with its reason, not fatal."""
    try:
        return index.upsert(rows)
    except InvalidValue:
        pass
    written = 0
    for row in rows:
        try:
            written += index.upsert([row])
        except InvalidValue as exc:
            skipped.append((row.source, f"invalid row: {exc}"))
    return written


class MilvusDatasink(Datasink):
    """Upserts each write task's rows into a Milvus server; the driver sums what each task returns."""

    def __init__(self, uri: str, token: str | None, collection: str) -> None:
        import pymilvus  # noqa: F401  (fail on the driver, before any task is scheduled)

        self.uri, self.token, self.collection = uri, token, collection
        self.embedded = 0
        self.skipped: list[tuple[str, str]] = []

    def write(self, blocks, ctx) -> dict:
        from ray.data.block import BlockAccessor

        index = FaceIndex(connect(self.uri, self.token), self.collection)
        embedded, skipped = 0, []
        for block in blocks:
            rows, failed = rows_from_batch(BlockAccessor.for_block(block).to_numpy())
            skipped += failed
            embedded += _upsert_checked(index, rows, skipped)
        index.client.close()
        return {"embedded": embedded, "skipped": skipped}

    def on_write_complete(self, write_result) -> None:
        for result in write_result.write_returns:
            self.embedded += result["embedded"]
            self.skipped += [tuple(s) for s in result["skipped"]]


def ingest(
    source: str | Path,
    model: str | Path,
    *,
    milvus: str,
    token: str | None = None,
    collection: str = "faces",
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
    progress=None,
) -> IngestSummary:
    """Embed `source` with `model` (an arcmatch checkpoint or an ONNX model) into `collection` at `milvus`."""
    import ray
    import ray.data

    from embedder.embed import open_embedder

    started = time.perf_counter()
    progress = progress or (lambda text: print(text, file=sys.stderr, flush=True))
    embedder = open_embedder(model)  # on the driver too: a bad model fails here, not in every actor
    spec, calibration = embedder.spec, embedder.calibration
    index = FaceIndex(connect(milvus, token), collection)
    index.ensure(CollectionInfo(spec.version, spec.embedding_size,
                                calibration.threshold if calibration else None, spec.to_dict()),
                 index_type=index_type)
    items = list_source(source)
    summary = IngestSummary(seen=len(items))
    if gpus_per_actor is None:  # embed on GPUs whenever the cluster has them
        gpus_per_actor = 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
    ds = ray.data.from_items(items)
    ds = ds.map_batches(decode_batch, fn_kwargs={"spec": spec}, batch_size=batch_size, batch_format="numpy")
    ds = ds.map_batches(EmbedBatch, fn_constructor_args=(str(model), threads_per_actor), batch_size=batch_size,
                        batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=embed_concurrency),
                        num_cpus=cpus_per_actor, num_gpus=gpus_per_actor)
    if export_parquet is not None or is_lite_uri(milvus):
        _write_from_driver(ds, index, summary, write_batch, export_parquet, progress)
    else:
        index.client.close()
        sink = MilvusDatasink(milvus, token, collection)
        ds.write_datasink(sink, concurrency=write_concurrency)
        summary.embedded, summary.skipped = sink.embedded, sink.skipped
        index = FaceIndex(connect(milvus, token), collection)
    index.flush()
    summary.rows_in_collection = index.count()
    index.client.close()
    summary.seconds = time.perf_counter() - started
    if errors_csv is not None:
        write_error_report(errors_csv, summary.skipped)
    return summary


def _write_from_driver(ds, index: FaceIndex, summary: IngestSummary, write_batch: int,
                       export_parquet: str | Path | None, progress) -> None:
    """The single-writer path (Milvus Lite, or when the vectors are also exported to Parquet)."""
    writer = None
    try:
        for batch in ds.iter_batches(batch_size=write_batch, batch_format="numpy"):
            rows, skipped = rows_from_batch(batch)
            summary.skipped += skipped
            write_started = time.perf_counter()
            summary.embedded += _upsert_checked(index, rows, summary.skipped)
            summary.write_seconds += time.perf_counter() - write_started
            if export_parquet is not None and rows:
                writer = _export(writer, export_parquet, rows)
            progress(f"ingest: {summary.embedded + len(summary.skipped)}/{summary.seen} images done, "
                     f"{summary.embedded} written")
    finally:
        if writer is not None:
            writer.close()


def _export(writer, path: str | Path, rows: list[FaceRow]):
    import pyarrow as pa
    import pyarrow.parquet as pq

    dim = len(rows[0].vector)
    table = pa.table({
        "face_id": pa.array([r.face_id for r in rows], pa.int64()),
        "identity": [r.identity for r in rows],
        "source": [r.source for r in rows],
        "vector": pa.array([np.asarray(r.vector, np.float32).tolist() for r in rows], pa.list_(pa.float32(), dim)),
    })
    if writer is None:
        writer = pq.ParquetWriter(str(path), table.schema)
    writer.write_table(table)
    return writer

