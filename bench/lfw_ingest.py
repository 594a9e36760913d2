"""LFW-gray through the whole ingestion path with the third-party MobileFaceNet (ONNX), checked on stored vectors.

1. `jobs.pipelines.ingest.ingest` embeds all 13,233 images of ../shared/data/lfw_gray into Milvus (Ray Data decode
   tasks, an ONNX actor, upserts), with the preprocessing of ../shared/models/mobilefacenet/MODEL.md (bench/specs).
2. Verification: the vectors of the official 6,000 pairs are read back from Milvus; 10-fold accuracy with the
   threshold chosen on the other nine folds. The model's own figure is 97.53 +- 0.70.
3. Identification: gallery = the first image of every person with two or more images, searched in Milvus;
   probes = their other images (known) and every image of people with one image (unknown). Rank-1 of known
   probes, and FNIR at FPIR 1% and 10%.
4. Throughput: ingestion images/s end to end vs the same model's pure forward images/s on decoded images, in the
   same run, and Milvus upsert rows/s.

    .venv/bin/python bench/lfw_ingest.py [--milvus URI | --server] [--forward-sample 1000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from harness import (  # bench/harness.py, beside this script
    SHARED,
    emit,
    milvus_store,
    onnx_model_dir,
    pair_scores,
)

from embedder.evaluation import kfold_accuracy
from embedder.onnx import OnnxEmbedder
from embedder.pairs import read_pairs
from embedder.preprocess import decode_image
from embedder.spec import ModelSpec
from indexer.decision import decide
from indexer.ids import face_id
from indexer.store import CollectionInfo, FaceIndex, FaceRow, connect
from jobs.pipelines.ingest import ingest
from jobs.runtime import init_ray


def identification(index: FaceIndex, gallery_index: FaceIndex, lfw: Path) -> dict:
    people = sorted(p for p in lfw.iterdir() if p.is_dir())
    images = {p.name: sorted(f.name for f in p.glob("*.jpg")) for p in people}
    gallery = {name: f"{name}/{files[0]}" for name, files in images.items() if len(files) >= 2}
    known = [(name, f"{name}/{f}") for name, files in images.items() if len(files) >= 2 for f in files[1:]]
    unknown = [f"{name}/{files[0]}" for name, files in images.items() if len(files) == 1]
    stored = index.vectors([face_id(s) for s in [*gallery.values(), *(s for _, s in known), *unknown]])
    gallery_index.ensure(CollectionInfo(index.info().model_version, index.info().dim), index_type="FLAT")
    rows = [FaceRow(s, name, stored[face_id(s)], face_id(s)) for name, s in gallery.items()]
    for start in range(0, len(rows), 1000):
        gallery_index.upsert(rows[start : start + 1000])

    def best(sources: list[str]) -> list:
        out = []
        for start in range(0, len(sources), 512):
            vectors = np.stack([stored[face_id(s)] for s in sources[start : start + 512]])
            out += [decide(hits, threshold=1.0) for hits in gallery_index.search(vectors, k=5)]
        return out

    known_decisions = best([s for _, s in known])
    unknown_scores = np.array([d.score for d in best(unknown)])
    correct = np.array([d.candidates[0].identity == name for d, (name, _) in zip(known_decisions, known, strict=True)])
    known_scores = np.array([d.score for d in known_decisions])
    result = {"gallery": len(gallery), "known_probes": len(known), "unknown_probes": len(unknown),
              "rank1": float(correct.mean())}
    for fpir in (0.01, 0.1):
        threshold = float(np.quantile(unknown_scores, 1 - fpir))
        result[f"fnir_at_fpir_{fpir:g}"] = float(1 - (correct & (known_scores > threshold)).mean())
        result[f"threshold_at_fpir_{fpir:g}"] = threshold
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--milvus", help="Milvus URI (default: a Milvus Lite file in a temporary directory)")
    parser.add_argument("--server", action="store_true", help="start the `milvus` package's server on loopback")
    parser.add_argument("--forward-sample", type=int, default=1000, help="images timed for the pure forward")
    parser.add_argument("--concurrency", type=int, default=1, help="embedding actors")
    parser.add_argument("--cpus-per-actor", type=float, default=1.0)
    parser.add_argument("--threads-per-actor", type=int, help="onnxruntime threads per actor (default: one per core)")
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = parser.parse_args()
    lfw, pairs_file = SHARED / "data" / "lfw_gray", SHARED / "data" / "lfw_pairs.txt"
    if not lfw.is_dir():
        raise SystemExit(f"LFW-gray not found at {lfw}: this benchmark needs ../shared")

    workdir = Path(tempfile.mkdtemp(prefix="arcmatch-lfw-"))
    with milvus_store(args.milvus or str(workdir / "lfw.db"), workdir / "server" if args.server else None) as uri:
        model = onnx_model_dir(workdir, "mobilefacenet.spec.json")
        init_ray()
        summary = ingest(lfw, model, milvus=uri, gallery="lfw", index_type="FLAT" if "://" not in uri else "HNSW",
                         embed_concurrency=args.concurrency, cpus_per_actor=args.cpus_per_actor,
                         threads_per_actor=args.threads_per_actor)
        print("\n".join(summary.lines()))

        client = connect(uri)
        index = FaceIndex(client, "lfw")
        pairs = read_pairs(pairs_file, lfw)
        stored = index.vectors([face_id(Path(p).relative_to(lfw).as_posix()) for p in pairs.images()])
        scores, _ = pair_scores(stored, pairs, lfw)
        verification = kfold_accuracy(scores, pairs.same, pairs.fold)
        ident = identification(index, FaceIndex(client, "lfw_gallery"), lfw)

        # pure forward on already decoded images, same model, same process: the ceiling for ingestion
        embedder = OnnxEmbedder.from_path(model)
        sample = sorted(lfw.rglob("*.jpg"))[: args.forward_sample]
        decoded = np.stack([decode_image(p.read_bytes(), ModelSpec.load(model)) for p in sample])
        started = time.perf_counter()
        embedder.embed(decoded)
        forward_rate = len(decoded) / (time.perf_counter() - started)
        ingest_rate = summary.embedded / summary.seconds
        result = {
            "milvus": "server 2.3" if "://" in uri else "Milvus Lite",
            "images": summary.seen, "embedded": summary.embedded, "skipped": len(summary.skipped),
            "rows_in_collection": summary.rows_in_collection,
            "verification_accuracy": verification.accuracy_mean, "verification_std": verification.accuracy_std,
            "roc_auc": verification.auc, **ident,
            "ingest_images_per_s": ingest_rate, "forward_images_per_s": forward_rate,
            "ingest_over_forward": ingest_rate / forward_rate,
            "upsert_rows_per_s": summary.embedded / summary.write_seconds if summary.write_seconds else None,
            "ingest_seconds": summary.seconds, "concurrency": args.concurrency,
            "cpus_per_actor": args.cpus_per_actor, "threads_per_actor": args.threads_per_actor,
        }
        client.close()
    emit(result, args.out)


if __name__ == "__main__":
    main()
