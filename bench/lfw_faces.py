"""LFW-gray from raw photos: the fixed crop vs YuNet detection and five-point alignment, through the real ingestion.

For each configuration, in one run:
1. `jobs.pipelines.ingest.ingest` embeds every image of the official pairs (../shared/data/lfw_pairs.txt) into a
   Milvus Lite collection with the shared MobileFaceNet: `crop` with bench/specs/mobilefacenet.spec.json (the
   fixed crop box, reference 97.53 +- 0.70), `2026may` and `n_dynamic` with bench/specs/mobilefacenet_aligned.spec.json
   and that YuNet file (faces found, aligned and embedded on the Ray Data decode tasks; `largest` face per photo,
   the quality gate off so every detection counts, since the question is accuracy, not admission).
2. 10-fold accuracy on the 6,000 pairs from the vectors read back from Milvus; a pair with an image that gave no
   face counts as wrong (and the accuracy over the pairs that have both is given beside it).
3. Ingestion images/s against the same decode-free forward (detect + align + embed for the aligned configurations,
   crop + embed for `crop`) on a sample of already decoded images, after Ray is shut down: in one process with
   onnxruntime's default threads, and in two single-threaded processes (the best case on two cores).
4. With --api: search-by-image through the API (uvicorn on loopback, in this process) on the 2026may gallery, for
   a 640x480 JPEG with one face: latency p50/p99 over --requests requests and the Server-Timing phases' medians
   (the threshold sent is the best-accuracy one over all pairs: the model directory has no calibration.json).

    .venv/bin/python bench/lfw_faces.py [--configs crop 2026may n_dynamic] [--api] [--out results.json]
"""

from __future__ import annotations

import argparse
import csv
import io
import multiprocessing
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import ray
from harness import SHARED, emit, latencies, onnx_model_dir, pair_scores, percentiles, server_timing
from PIL import Image

from embedder.detect import YuNetDetector
from embedder.evaluation import best_threshold, kfold_accuracy
from embedder.faces import FacePolicy
from embedder.onnx import OnnxEmbedder
from embedder.pairs import PairList, read_pairs
from embedder.quality import QualityGate
from indexer.ids import face_id
from indexer.store import FaceIndex, connect
from jobs.pipelines.ingest import ingest
from jobs.runtime import init_ray

LFW, PAIRS = SHARED / "data" / "lfw_gray", SHARED / "data" / "lfw_pairs.txt"
CONFIGS = {  # name: (spec file, YuNet file or None)
    "crop": ("mobilefacenet.spec.json", None),
    "2026may": ("mobilefacenet_aligned.spec.json", "face_detection_yunet_2026may.onnx"),
    "n_dynamic": ("mobilefacenet_aligned.spec.json", "yunet_n_dynamic.onnx"),
}
NO_GATE = QualityGate(0, 0.0, 0.0)


def pair_manifest(workdir: Path, pairs) -> Path:
    """The images of the pairs as a CSV manifest, each keyed by its path relative to LFW (as a tree would be)."""
    path = workdir / "pairs.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["uri", "identity", "face_id"])
        for image in pairs.images():
            relative = Path(image).relative_to(LFW)
            writer.writerow([image, relative.parent.name, relative.as_posix()])
    return path


def policy_for(detector_file: str | None, threads: int | None) -> FacePolicy | None:
    if detector_file is None:
        return None
    return FacePolicy(YuNetDetector(SHARED / "models" / "yunet" / detector_file, threads=threads), NO_GATE, "largest")


def forward_seconds(model: Path, detector_file: str | None, sample: list[str], threads: int | None) -> float:
    """Seconds of decode-free inference over `sample` in this process: detect + align + embed (or crop + embed),
    one image at a time as the decode tasks see them; `threads` for onnxruntime (None: one per core)."""
    embedder = OnnxEmbedder.from_path(model, threads=threads)
    policy = policy_for(detector_file, threads) or FacePolicy()  # FacePolicy(): alignment "none", the spec's crop
    photos = [np.asarray(Image.open(p).convert("RGB")) for p in sample]
    started = time.perf_counter()
    for photo in photos:
        faces = policy.prepare(photo, embedder.spec)
        embedder.embed(np.stack([f.chip for f in faces]))
    return time.perf_counter() - started


def forward_rates(model: Path, detector_file: str | None, sample: list[str]) -> dict:
    """Images/s of the same forward: in one process with the runtime's default threads (the baseline), and in two
    processes of one thread each on half the sample (the best case on two cores: what the pipeline's decode tasks
    and actors can reach at most)."""
    one = len(sample) / forward_seconds(model, detector_file, sample, None)
    halves = [sample[0::2], sample[1::2]]
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        seconds = list(pool.map(forward_seconds, [model] * 2, [detector_file] * 2, halves, [1, 1]))
    return {"forward_images_per_s": one, "forward_2x1_images_per_s": len(sample) / max(seconds)}


def run_config(name: str, workdir: Path, uri: str, manifest: Path, pairs, args) -> dict:
    spec_file, detector_file = CONFIGS[name]
    model = onnx_model_dir(workdir, spec_file, f"model_{name}")
    summary = ingest(manifest, model, milvus=uri, gallery=f"lfw_{name}", index_type="FLAT",
                     embed_concurrency=args.concurrency, cpus_per_actor=args.cpus_per_actor,
                     threads_per_actor=args.threads_per_actor, policy=policy_for(detector_file, 1),
                     errors_csv=workdir / f"errors_{name}.csv")
    print(name, "\n".join(summary.lines()), flush=True)
    client = connect(uri)
    stored = FaceIndex(client, f"lfw_{name}").vectors(
        [face_id(Path(p).relative_to(LFW).as_posix()) for p in pairs.images()])
    client.close()
    scores, present = pair_scores(stored, pairs, LFW)
    counted = np.where(present, scores, np.where(pairs.same, -2.0, 2.0))  # a pair without a face is wrong
    verification = kfold_accuracy(counted, pairs.same, pairs.fold)
    threshold = best_threshold(scores[present], pairs.same[present])  # the model has no calibration.json
    complete = kfold_accuracy(scores[present], pairs.same[present], pairs.fold[present])
    return {"config": name, "model": model, "spec": spec_file, "detector": detector_file, "images": summary.seen,
            "embedded": summary.embedded, "skipped": len(summary.skipped),
            "skipped_reasons": sorted({reason for _, reason in summary.skipped}),
            "pairs_without_a_face": int((~present).sum()),
            "accuracy": verification.accuracy_mean, "accuracy_std": verification.accuracy_std,
            "roc_auc": verification.auc, "threshold": threshold, "accuracy_complete_pairs": complete.accuracy_mean,
            "ingest_images_per_s": summary.embedded / summary.seconds, "ingest_seconds": summary.seconds}


def add_forward(result: dict, sample: list[str]) -> None:
    result.update(forward_rates(result.pop("model"), result["detector"], sample), forward_sample=len(sample))
    result["ingest_over_forward"] = result["ingest_images_per_s"] / result["forward_images_per_s"]
    result["ingest_over_forward_2x1"] = result["ingest_images_per_s"] / result["forward_2x1_images_per_s"]


def probe_photo(name: str = "George_W_Bush", number: int = 10) -> bytes:
    """A 640x480 JPEG with one face: an LFW-gray photo scaled 1.2x on a noisy grey background."""
    rng = np.random.default_rng(0)
    canvas = np.clip(rng.normal(120, 25, (480, 640, 3)), 0, 255).astype(np.uint8)
    face = Image.open(LFW / name / f"{name}_{number:04d}.jpg").convert("RGB").resize((300, 300), Image.BICUBIC)
    canvas[90:390, 170:470] = np.asarray(face)
    buffer = io.BytesIO()
    Image.fromarray(canvas).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def api_latency(workdir: Path, uri: str, requests: int, threshold: float) -> dict:
    import httpx

    from jobs.api.app import create_app
    from jobs.api.keys import new_key
    from jobs.api.local import serve_in_thread
    from jobs.settings import Settings

    key, entry = new_key("bench", ["read"])
    settings = Settings(model=workdir / "model_2026may", api_keys=entry, milvus_uri=uri, gallery="lfw_2026may",
                        detector=SHARED / "models" / "yunet" / CONFIGS["2026may"][1])
    photo, phases = probe_photo(), []
    with serve_in_thread(create_app(settings)) as base, httpx.Client(base_url=base, timeout=60) as http:
        def call(_):
            response = http.post("/v1/search", files={"image": ("probe.jpg", photo, "image/jpeg")},
                                 data={"threshold": str(threshold)}, headers={"X-API-Key": key})
            if response.status_code != 200:
                raise SystemExit(f"the API answered {response.status_code}: {response.text}")
            phases.append(server_timing(response))
            return response

        answer = call(None).json()["faces"]
        latencies(call, range(20))  # warm-up
        phases.clear()
        seconds = latencies(call, range(requests))
    medians = {f"{name}_ms": float(np.median([p[name] for p in phases]) * 1000)
               for name in ("app", "decode", "detect", "embed", "search")}
    return {"requests": requests, "probe": "640x480 JPEG, George_W_Bush_0010 scaled to 300 px",
            "gallery_faces": None, "faces_found": len(answer), "identity": answer[0]["identity"],
            "score": answer[0]["score"], **percentiles(seconds), **medians}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--forward-sample", type=int, default=500, help="images timed for the one-process forward")
    parser.add_argument("--concurrency", type=int, default=2, help="embedding actors")
    parser.add_argument("--cpus-per-actor", type=float, default=0.5)
    parser.add_argument("--threads-per-actor", type=int, default=1)
    parser.add_argument("--api", action="store_true", help="also time search-by-image through the API (2026may)")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--pairs", type=int, help="every n-th pair only, about this many (a quick look)")
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = parser.parse_args()
    if not LFW.is_dir():
        raise SystemExit(f"LFW-gray not found at {LFW}: this benchmark needs ../shared")
    if args.api and "2026may" not in args.configs:
        raise SystemExit("--api searches the 2026may gallery: keep 2026may in --configs")
    workdir = Path(tempfile.mkdtemp(prefix="arcmatch-lfw-faces-"))
    uri = str(workdir / "lfw.db")
    pairs = read_pairs(PAIRS, LFW)
    if args.pairs:
        keep = np.arange(0, len(pairs.left), max(1, len(pairs.left) // args.pairs))
        pairs = PairList([pairs.left[i] for i in keep], [pairs.right[i] for i in keep], pairs.same[keep],
                         pairs.fold[keep])
    manifest = pair_manifest(workdir, pairs)
    init_ray()
    result = {"configs": [run_config(name, workdir, uri, manifest, pairs, args) for name in args.configs]}
    ray.shutdown()  # the forward baselines and the API run without Ray's processes beside them
    images = pairs.images()
    sample = images[:: max(1, len(images) // args.forward_sample)][: args.forward_sample]
    for config in result["configs"]:
        add_forward(config, sample)
    if args.api:
        aligned = next(c for c in result["configs"] if c["config"] == "2026may")
        result["api"] = api_latency(workdir, uri, args.requests, aligned["threshold"])
        result["api"]["gallery_faces"] = aligned["embedded"]
    emit(result, args.out)


if __name__ == "__main__":
    main()
