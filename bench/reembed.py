"""A real model upgrade on real faces: an LFW-gray gallery built with a model trained here, moved to the
shared MobileFaceNet with `reembed`, every face accounted for, identification before and after.

1. The people with two or more images are dealt in turn to four groups: enrolled, unknown, training, training.
   Model A: a timm resnet10t + ArcFace trained here (`trainer.ray_loop.fit`) on every image of the training
   people and of the people with one image (never in the gallery, never a probe).
2. Gallery (`ingest` from the JPEG files, face archive on): each enrolled person's first image and every image
   after their fifth. Known probes: the 2nd-5th images of each enrolled person; unknown probes: the first image of
   each unknown person. Rank-1 of known probes and FNIR at FPIR 1% (the threshold at which 1% of unknown probes
   would be accepted), through Milvus.
3. `reembed` to MobileFaceNet (ONNX, the preprocessing of ../shared/models/mobilefacenet/MODEL.md) while a thread
   searches the gallery's collection as the old model's API would: search p50/p99 during the job vs before it.
   Re-embed throughput (faces/s) against the same MobileFaceNet's ingestion of the same faces from the original
   JPEGs, same run; archive size per face; the time the alias switch took.

    .venv/bin/python bench/reembed.py [--epochs 10] [--model-a DIR] [--repeats 3] [--server] [--out FILE]

4. Throughput side by side, without the searching thread: `--repeats` rounds of (the new model's ingestion of
   the gallery's JPEGs into a scratch collection; the re-embed of the gallery, then rollback and drop), medians.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import SHARED, emit, milvus_store, onnx_model_dir, percentiles  # noqa: E402
from embedder.sources import LabelledImage, write_manifest  # noqa: E402
from indexer.archive import FaceArchive  # noqa: E402
from indexer.decision import decide  # noqa: E402
from indexer.galleries import Galleries  # noqa: E402
from indexer.store import FaceIndex, connect  # noqa: E402
from jobs.pipelines.ingest import ingest  # noqa: E402
from jobs.pipelines.reembed import reembed  # noqa: E402
from jobs.runtime import init_ray  # noqa: E402

LFW = SHARED / "data" / "lfw_gray"
CROP = (0.22, 0.18, 0.78, 0.74)  # the (55, 45, 195, 185) box of the 250 px image, as bench/lfw_train.py


def split() -> tuple[list[LabelledImage], list[LabelledImage], list[LabelledImage], list[LabelledImage]]:
    """(training images for model A, gallery, known probes, unknown probes)."""
    people = sorted(p for p in LFW.iterdir() if p.is_dir())
    files = {p.name: sorted(str(f) for f in p.glob("*.jpg")) for p in people}
    several = [name for name, f in files.items() if len(f) >= 2]
    enrolled, others = several[0::4], several[1::4]
    training = [n for n in files if len(files[n]) == 1] + several[2::4] + several[3::4]
    train = [LabelledImage(f, n) for n in training for f in files[n]]
    gallery = [LabelledImage(f, n) for n in enrolled for f in files[n][:1] + files[n][5:]]
    known = [LabelledImage(f, n) for n in enrolled for f in files[n][1:5]]
    unknown = [LabelledImage(files[n][0], n) for n in others]
    return train, gallery, known, unknown


def train_model_a(train: list[LabelledImage], workdir: Path, epochs: int) -> tuple[Path, float]:
    from embedder.spec import ModelSpec
    from trainer.config import TrainConfig
    from trainer.ray_loop import fit

    manifest = workdir / "train.csv"
    write_manifest(manifest, train)
    spec = ModelSpec("resnet10t", embedding_size=256, input_size=(64, 64), crop_box=CROP)
    config = TrainConfig(data=str(manifest), spec=spec, head="arcface", epochs=epochs, batch_size=64,
                         optimizer="adamw", lr=2e-3, cpus_per_worker=2, log_every=50)
    result = fit(config, workdir / "model-a", storage=workdir / "runs", name="reembed-bench-a")
    return workdir / "model-a", result.seconds


def identification(uri: str, gallery: str, model: Path, known: list[LabelledImage],
                   unknown: list[LabelledImage]) -> dict:
    """Rank-1 and FNIR at FPIR 1% of the probes, embedded with `model`, searched in the gallery's alias."""
    from embedder.embed import open_embedder
    from embedder.preprocess import decode_image

    embedder = open_embedder(model)
    client = connect(uri)
    index = FaceIndex(client, gallery)

    def best(items: list[LabelledImage]):
        out = []
        for start in range(0, len(items), 256):
            chunk = items[start : start + 256]
            vectors = embedder.embed(np.stack([decode_image(Path(i.path).read_bytes(), embedder.spec)
                                               for i in chunk]))
            out += [decide(hits, threshold=1.0) for hits in index.search(vectors, k=5)]
        return out

    known_decisions = best(known)
    unknown_scores = np.array([d.score for d in best(unknown)])
    correct = np.array([d.candidates[0].identity == p.identity for d, p in zip(known_decisions, known, strict=True)])
    scores = np.array([d.score for d in known_decisions])
    threshold = float(np.quantile(unknown_scores, 0.99))
    client.close()
    return {"model": embedder.spec.version, "rank1": round(float(correct.mean()), 4),
            "fnir_at_fpir_1pct": round(float(1 - (correct & (scores > threshold)).mean()), 4),
            "threshold_at_fpir_1pct": round(threshold, 4)}


class Searcher:
    """Searches the old model's collection from a thread, as its API keeps doing through the job."""

    def __init__(self, uri: str, collection: str, dim: int) -> None:
        self.index = FaceIndex(connect(uri), collection, consistency="Session")
        self.dim, self.stop, self.seconds, self.failures = dim, threading.Event(), [], 0
        self.rng = np.random.default_rng(0)

    def run(self) -> None:
        while not self.stop.is_set():
            vector = self.rng.normal(size=(1, self.dim)).astype(np.float32)
            vector /= np.linalg.norm(vector)
            started = time.perf_counter()
            try:
                self.index.search(vector, k=20)
                self.seconds.append(time.perf_counter() - started)
            except Exception:  # noqa: BLE001  (counted: the goal is none)
                self.failures += 1
            time.sleep(0.02)

    def measure(self, seconds: float) -> dict:
        self.seconds, self.failures, self.stop = [], 0, threading.Event()
        thread = threading.Thread(target=self.run, daemon=True)
        thread.start()
        time.sleep(seconds)
        self.stop.set()
        thread.join()
        return {**percentiles(self.seconds), "searches": len(self.seconds), "failures": self.failures}


def side_by_side(uri: str, manifest: Path, model_b: Path, archive: str, target: str, repeats: int) -> dict:
    """Re-embed vs the same model's ingestion from the JPEGs, alternating, nothing else running: faces/s each
    round, the medians and their ratio, and where the re-embed's time went (its stages)."""
    from jobs.progress import silent

    rounds = []
    for _ in range(repeats):
        client = connect(uri)
        galleries = Galleries(client, "lfw")
        if galleries.target() == target:
            galleries.rollback()
        galleries.drop(target)
        Galleries(client, "scratch").drop_all()
        client.close()
        direct = ingest(manifest, model_b, milvus=uri, gallery="scratch", index_type="FLAT")
        console = silent()
        moved = reembed(str(model_b), milvus=uri, gallery="lfw", archive=archive, threshold=0.5, grace_s=0,
                        index_type="FLAT", console=console)
        rounds.append({"ingest_faces_per_s": round(direct.embedded / direct.seconds, 1),
                       "reembed_faces_per_s": round(moved.embedded / moved.seconds, 1),
                       "reembed_stages_s": {k: round(v, 1) for k, v in console.times.items()},
                       "reembed_seconds": round(moved.seconds, 1)})
        print(rounds[-1], file=sys.stderr)
    ingest_rate = float(np.median([r["ingest_faces_per_s"] for r in rounds]))
    reembed_rate = float(np.median([r["reembed_faces_per_s"] for r in rounds]))
    return {"rounds": rounds, "ingest_median": ingest_rate, "reembed_median": reembed_rate,
            "ratio": round(reembed_rate / ingest_rate, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=10, help="model A's training epochs")
    parser.add_argument("--model-a", type=Path, help="model A trained by an earlier run (skips training)")
    parser.add_argument("--repeats", type=int, default=3, help="side-by-side throughput rounds")
    parser.add_argument("--server", action="store_true", help="a Milvus server on loopback instead of Milvus Lite")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if not LFW.is_dir():
        raise SystemExit(f"LFW-gray not found at {LFW}: this benchmark needs ../shared")
    workdir = Path(tempfile.mkdtemp(prefix="arcmatch-reembed-"))
    with milvus_store(str(workdir / "gallery.db"), workdir / "milvus" if args.server else None) as uri:
        init_ray(None)
        train, gallery, known, unknown = split()
        model_a, train_seconds = (args.model_a, 0.0) if args.model_a else train_model_a(train, workdir, args.epochs)
        model_b = onnx_model_dir(workdir, "mobilefacenet.spec.json")
        archive = str(workdir / "archive")
        manifest = workdir / "gallery.csv"
        write_manifest(manifest, gallery)
        result: dict = {"train_images_model_a": len(train), "model_a_train_seconds": round(train_seconds, 1),
                        "gallery": len(gallery), "gallery_identities": len({g.identity for g in gallery}),
                        "known_probes": len(known), "unknown_probes": len(unknown),
                        "store": "server" if args.server else "lite"}

        built = ingest(manifest, model_a, milvus=uri, gallery="lfw", archive=archive, index_type="FLAT")
        result["ingest_model_a"] = {"faces": built.embedded, "faces_per_s": round(built.embedded / built.seconds, 1)}
        result["before"] = identification(uri, "lfw", model_a, known, unknown)
        # the same faces from the original JPEGs with the new model, for the throughput comparison (not archived)
        direct = ingest(manifest, model_b, milvus=uri, gallery="scratch", index_type="FLAT")
        result["ingest_model_b_from_jpegs"] = {"faces": direct.embedded,
                                               "faces_per_s": round(direct.embedded / direct.seconds, 1)}
        client = connect(uri)
        source = Galleries(client, "lfw").target()
        client.close()
        searcher = Searcher(uri, source, 256)
        result["search_before"] = searcher.measure(10)

        box: dict = {}
        job = threading.Thread(target=lambda: box.update(summary=reembed(
            str(model_b), milvus=uri, gallery="lfw", archive=archive, threshold=0.5, grace_s=0,
            index_type="FLAT")))
        searcher.seconds, searcher.failures, searcher.stop = [], 0, threading.Event()
        during = threading.Thread(target=searcher.run, daemon=True)
        job.start()
        during.start()
        job.join()
        searcher.stop.set()
        during.join()
        summary = box["summary"]
        result["search_during_reembed"] = {**percentiles(searcher.seconds), "searches": len(searcher.seconds),
                                           "failures": searcher.failures}
        stats = FaceArchive(archive, "lfw").stats()
        result["reembed"] = {"faces_in_service": summary.in_source, "archived": summary.archived_live,
                             "embedded": summary.embedded, "skipped": len(summary.skipped),
                             "not_archived": summary.not_archived, "in_new_collection": summary.in_target,
                             "faces_per_s_whole_job": round(summary.embedded / summary.seconds, 1),
                             "seconds": round(summary.seconds, 1), "alias_switch_ms": round(summary.switch_ms, 2),
                             "archive_bytes_per_face": round(stats.bytes / max(stats.live, 1))}
        result["reembed_vs_ingest_faces_per_s"] = round(
            result["reembed"]["faces_per_s_whole_job"] / result["ingest_model_b_from_jpegs"]["faces_per_s"], 2)
        result["after"] = identification(uri, "lfw", model_b, known, unknown)
        result["throughput"] = side_by_side(uri, manifest, model_b, archive, summary.target, args.repeats)
        emit(result, args.out)


if __name__ == "__main__":
    main()
