"""Face detection and five-point alignment on LFW-gray and ORL: how often YuNet finds the face, and what it costs.

For each YuNet file and each image (all 13,233 of ../shared/data/lfw_gray, all 400 of ../shared/data/orl_att_faces)
it times `detect` on the full image and `align_face` of the best face to a 112x112 crop, one image at a time,
then prints a markdown table: images with at least one face, with exactly one, whose best face passes the default
QualityGate, and the median (and 90th percentile) milliseconds per image of each step. Decoding is not timed.

    .venv/bin/python bench/detect_lfw.py [--models face_detection_yunet_2026may.onnx yunet_n_dynamic.onnx]
        [--threads 1] [--limit N] [--out bench/results_detect.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
from PIL import Image

from embedder.align import align_face
from embedder.detect import YuNetDetector
from embedder.quality import QualityGate, measure

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
DATASETS = {"LFW-gray": ("lfw_gray", "*/*.jpg"), "ORL": ("orl_att_faces", "s*/*.pgm")}


def run(detector: YuNetDetector, paths: list[Path], gate: QualityGate) -> dict:
    found = single = passed = 0
    detect_s, align_s = [], []
    for path in paths:
        image = np.asarray(Image.open(path).convert("RGB"))
        started = time.perf_counter()
        faces = detector.detect(image)
        detect_s.append(time.perf_counter() - started)
        if not faces:
            continue
        started = time.perf_counter()
        chip = align_face(image, faces[0].landmarks, (112, 112))
        align_s.append(time.perf_counter() - started)
        found += 1
        single += len(faces) == 1
        passed += gate.passes(measure(faces[0], chip))
    detect_ms, align_ms = np.asarray(detect_s) * 1000, np.asarray(align_s or [np.nan]) * 1000
    return {"images": len(paths), "found": found, "single": single, "passed": passed,
            "detect_ms": np.median(detect_ms), "detect_p90_ms": np.percentile(detect_ms, 90),
            "align_ms": np.median(align_ms), "align_p90_ms": np.percentile(align_ms, 90)}


def table(rows: list[tuple[str, str, dict]], threads: int, threshold: float) -> str:
    lines = [
        f"YuNet at score >= {threshold}, {threads} onnxruntime thread(s), one image at a time, on "
        f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}); align = 112x112 crop of the "
        f"best face; gate = default QualityGate on the best face. Medians (p90) over every image of the set.",
        "",
        "| data | detector | images | found | exactly one | pass gate | detect ms/image | align ms/image |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for data, model, r in rows:
        n = r["images"]
        lines.append(
            f"| {data} | {model} | {n} | {r['found']} ({r['found'] / n:.2%}) | {r['single']} ({r['single'] / n:.2%}) "
            f"| {r['passed']} ({r['passed'] / n:.2%}) | {r['detect_ms']:.2f} ({r['detect_p90_ms']:.2f}) "
            f"| {r['align_ms']:.2f} ({r['align_p90_ms']:.2f}) |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["face_detection_yunet_2026may.onnx"],
                        help="YuNet files in ../shared/models/yunet (or paths)")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    parser.add_argument("--score-threshold", type=float, default=0.7)
    parser.add_argument("--limit", type=int, help="the first N images of each set only (a quick look)")
    parser.add_argument("--out", type=Path, help="also write the table here")
    args = parser.parse_args()
    sets = {}
    for name, (folder, pattern) in DATASETS.items():
        directory = SHARED / "data" / folder
        if not directory.is_dir():
            raise SystemExit(f"{name} not found at {directory}: this benchmark needs ../shared")
        sets[name] = sorted(directory.glob(pattern))[: args.limit]
    gate = QualityGate()
    rows = []
    for model in args.models:
        path = Path(model) if Path(model).is_file() else SHARED / "models" / "yunet" / model
        detector = YuNetDetector(path, threads=args.threads, score_threshold=args.score_threshold)
        for name, paths in sets.items():
            rows.append((name, path.name, run(detector, paths, gate)))
            print(f"{name} {path.name}: {rows[-1][2]}", flush=True)
    text = table(rows, args.threads, args.score_threshold)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
