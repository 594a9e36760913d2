"""Bulk gallery ingestion: list -> decode on CPU tasks -> embed on an actor pool -> upsert into Milvus.

Decoding and embedding are Ray Data stages, so a cluster spreads them over its CPUs and GPUs. The write goes
through the driver, a single writer, because Milvus Lite opens its file from one process only; face ids derive
from the source path (relative to the tree's root or the manifest's folder, so moving the tree
changes nothing), so a re-run after a crash upserts the same rows and leaves no duplicates. Images that
cannot be read are skipped, reported with their reason, and counted; they never stop the job.
"""

from __future__ import annotations

import csv
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from embedder.errors import ImageError
from embedder.preprocess import decode_image
from embedder.spec import ModelSpec
from indexer.ids import face_id
from indexer.store import CollectionInfo, FaceIndex, FaceRow
from trainer.data import list_images


@dataclass
class IngestSummary:
    seen: int = 0
    embedded: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    rows_in_collection: int = 0
    seconds: float = 0.0

    def skipped_by_reason(self) -> Counter:
        return Counter(reason.split(":")[0] for _, reason in self.skipped)

    def lines(self) -> list[str]:
        rate = self.embedded / self.seconds if self.seconds else 0.0
        out = [f"images seen {self.seen}, embedded {self.embedded}, skipped {len(self.skipped)}",
               f"rows in collection {self.rows_in_collection}, {rate:.1f} images/s over {self.seconds:.1f} s"]
        out += [f"  skipped ({reason}): {n}" for reason, n in self.skipped_by_reason().most_common()]
        return out


def decode_batch(batch: dict[str, np.ndarray], spec: ModelSpec) -> dict[str, np.ndarray]:
    """CPU stage: read and decode each file; a failure becomes an `error` string and a blank image."""
    height, width = spec.input_size
    images = np.zeros((len(batch["path"]), height, width, 3), dtype=np.uint8)
    errors = []
    for i, path in enumerate(batch["path"]):
        try:
            images[i] = decode_image(Path(path).read_bytes(), spec)
            errors.append("")
        except ImageError as exc:
            errors.append(str(exc))
        except OSError as exc:
            errors.append(f"unreadable file: {exc.strerror or exc}")
    return {"source": batch["source"], "identity": batch["identity"], "image": images,
            "error": np.asarray(errors, dtype=object)}


class EmbedBatch:
    """Actor stage: the model is loaded once per actor (on its GPU when it has one) and reused for every batch."""

    def __init__(self, model_dir: str) -> None:
        import torch

        from embedder.embed import TorchEmbedder

        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.embedder = TorchEmbedder.from_checkpoint(model_dir, device=device)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ok = batch["error"] == ""
        vectors = np.zeros((len(ok), self.embedder.spec.embedding_size), dtype=np.float32)
        if ok.any():
            vectors[ok] = self.embedder.embed(batch["image"][ok])
        return {"source": batch["source"], "identity": batch["identity"], "error": batch["error"], "vector": vectors}


def _source_id(path: str, base: Path) -> str:
    """The face's stable source id: its path relative to the tree root (or manifest folder) where possible."""
    try:
        return Path(path).resolve().relative_to(base).as_posix()
    except ValueError:
        return Path(path).resolve().as_posix()


def ingest(
    source: str | Path,
    model_dir: str | Path,
    index: FaceIndex,
    *,
    batch_size: int = 64,
    embed_concurrency: int = 1,
    gpus_per_actor: float = 0.0,
    write_batch: int = 512,
    index_type: str = "HNSW",
    errors_csv: str | Path | None = None,
) -> IngestSummary:
    import ray.data

    from embedder.checkpoint import Calibration

    started = time.perf_counter()
    spec = ModelSpec.load(model_dir)
    calibration = Calibration.load(model_dir)
    index.ensure(CollectionInfo(spec.version, spec.embedding_size,
                                calibration.threshold if calibration else None, spec.to_dict()),
                 index_type=index_type)
    items = list_images(source)
    summary = IngestSummary(seen=len(items))
    source = Path(source).resolve()
    base = source.parent if source.is_file() else source
    ds = ray.data.from_items([
        {"path": item.path, "source": _source_id(item.path, base), "identity": item.identity} for item in items
    ])
    ds = ds.map_batches(decode_batch, fn_kwargs={"spec": spec}, batch_size=batch_size, batch_format="numpy")
    ds = ds.map_batches(EmbedBatch, fn_constructor_args=(str(model_dir),), batch_size=batch_size,
                        batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=embed_concurrency),
                        num_gpus=gpus_per_actor)
    for batch in ds.iter_batches(batch_size=write_batch, batch_format="numpy"):
        rows = []
        for source, identity, error, vector in zip(batch["source"], batch["identity"], batch["error"],
                                                   batch["vector"], strict=True):
            if error:
                summary.skipped.append((str(source), str(error)))
            else:
                rows.append(FaceRow(str(source), str(identity), vector, face_id(str(source))))
        summary.embedded += index.upsert(rows)
    index.flush()
    summary.rows_in_collection = index.count()
    summary.seconds = time.perf_counter() - started
    if errors_csv is not None:
        write_error_report(errors_csv, summary.skipped)
    return summary


def write_error_report(path: str | Path, skipped: list[tuple[str, str]]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "reason"])
        writer.writerows(skipped)
