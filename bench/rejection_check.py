"""What ingestion's "not this person" check costs a write batch: `keep_rejections` (one read of the batch's ids,
without vectors) beside the upsert it guards, on a Milvus Lite file or a server.

    .venv/bin/python bench/rejection_check.py [--server] [--batches 20] [--batch 512]

Reported: medians over the batches of the check on ids not yet stored (a first ingestion), the upsert, and the
check on ids all stored (the same tree ingested again), in ms per batch.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import emit, milvus_store  # noqa: E402
from indexer.store import CollectionInfo, FaceIndex, FaceRow, connect  # noqa: E402
from indexer.writer import GalleryWriter  # noqa: E402
from jobs.pipelines.sink import keep_rejections  # noqa: E402


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return (time.perf_counter() - started) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", action="store_true", help="a Milvus server on loopback (default: a Lite file)")
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--batch", type=int, default=512, help="rows per write batch (ingest's --write-batch)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="arcmatch-bench-"))
    with milvus_store(str(work / "check.db"), work / "server" if args.server else None) as uri:
        result = measure(uri, args.batches, args.batch)
    emit({"store": "server" if args.server else "lite", "batch": args.batch, **result}, None)


def measure(uri: str, batches: int, size: int) -> dict:
    client = connect(uri)
    index = FaceIndex(client, "bench_rejection_check")
    index.ensure(CollectionInfo("bench", 128, None, {}), index_type="FLAT")
    writer = GalleryWriter(index)
    rng = np.random.default_rng(0)
    new, upsert, stored = [], [], []
    written = [[FaceRow(f"p{b}_{i}.png", f"id{i % 50}", rng.standard_normal(128).astype(np.float32),
                        b * size + i + 1, {"sha256": "0" * 64}) for i in range(size)] for b in range(batches)]
    try:
        for rows in written:
            new.append(timed(lambda rows=rows: keep_rejections(writer, rows, [])))
            upsert.append(timed(lambda rows=rows: index.upsert(rows)))
        for rows in written:
            stored.append(timed(lambda rows=rows: keep_rejections(writer, rows, [])))
    finally:
        client.drop_collection("bench_rejection_check")
        client.close()
    return {"check_new_ids_ms": round(float(np.median(new)), 1), "upsert_ms": round(float(np.median(upsert)), 1),
            "check_stored_ids_ms": round(float(np.median(stored)), 1)}


if __name__ == "__main__":
    main()
