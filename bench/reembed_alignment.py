"""A gallery made with a box-crop model moved to a five-point model on real faces: the shared MobileFaceNet behind
its fixed LFW crop box (bench/specs/mobilefacenet.spec.json), then the same weights behind YuNet and five-point
alignment (mobilefacenet_aligned.spec.json), with `reembed`.

The people and photos are bench/reembed.py's split of LFW-gray (gallery: each enrolled person's first image and
every image after their fifth; known probes: their 2nd-5th images; unknown probes: the first image of people never
enrolled). Two archives of the same gallery, one per arm:
- `detect-again`: ingested without a detector (as every box-crop gallery was before): the re-embed finds each
  face again inside the old model's crop box;
- `landmarks-kept`: ingested with a detector configured: the archive holds each photo's landmarks, the re-embed
  aligns without detecting.
For each arm: the dry run's prediction and the run's counts (faces moved, faces left behind and why), faces/s of
the re-embed against the aligned model's ingestion of the same JPEGs (same run, alternating, medians over
`--repeats`), and rank-1 / FNIR at FPIR 1% of the probes before (box crop) and after (aligned) through Milvus.

    .venv/bin/python bench/reembed_alignment.py [--repeats 3] [--out FILE]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import SHARED, emit, onnx_model_dir  # noqa: E402
from bench.reembed import LFW, split  # noqa: E402
from embedder.detect import YuNetDetector  # noqa: E402
from embedder.faces import FacePolicy  # noqa: E402
from embedder.sources import LabelledImage, write_manifest  # noqa: E402
from indexer.decision import decide  # noqa: E402
from indexer.galleries import Galleries  # noqa: E402
from indexer.store import FaceIndex, connect  # noqa: E402
from jobs.pipelines.ingest import ingest  # noqa: E402
from jobs.pipelines.reembed import reembed  # noqa: E402
from jobs.pipelines.report import reasons  # noqa: E402
from jobs.progress import silent  # noqa: E402
from jobs.runtime import init_ray  # noqa: E402

YUNET = SHARED / "models" / "yunet" / "face_detection_yunet_2026may.onnx"
THRESHOLD = 0.37  # the new collection's threshold, as a user gives it (`--threshold`): the model ships none


def identification(uri: str, gallery: str, model: Path, policy: FacePolicy, known: list[LabelledImage],
                   unknown: list[LabelledImage]) -> dict:
    """Rank-1 and FNIR at FPIR 1% of the probes (each photo's largest face, by the model's own face policy)."""
    from embedder.embed import open_embedder
    from embedder.preprocess import load_rgb

    embedder = open_embedder(model)
    index = FaceIndex(connect(uri), Galleries(connect(uri), gallery).serving())
    largest = FacePolicy(policy.detector, policy.gate, "largest")

    def best(items: list[LabelledImage]) -> tuple[list, int]:
        chips, found = [], []
        for n, item in enumerate(items):
            try:
                chips.append(largest.prepare(load_rgb(Path(item.path).read_bytes()), embedder.spec)[0].chip)
                found.append(n)
            except Exception:  # noqa: BLE001  (a probe without an acceptable face counts as a miss)
                continue
        decisions = [None] * len(items)
        for start in range(0, len(chips), 256):
            hits = index.search(embedder.embed(np.stack(chips[start : start + 256])), k=5)
            for n, h in zip(found[start : start + 256], hits, strict=True):
                decisions[n] = decide(h, threshold=1.0)
        return decisions, len(items) - len(found)

    known_decisions, known_missing = best(known)
    unknown_decisions, _ = best(unknown)
    unknown_scores = np.array([d.score if d else -1.0 for d in unknown_decisions])
    correct = np.array([d is not None and d.candidates[0].identity == p.identity
                        for d, p in zip(known_decisions, known, strict=True)])
    scores = np.array([d.score if d else -1.0 for d in known_decisions])
    threshold = float(np.quantile(unknown_scores, 0.99))
    index.client.close()
    return {"model": embedder.spec.version, "rank1": round(float(correct.mean()), 4),
            "fnir_at_fpir_1pct": round(float(1 - (correct & (scores > threshold)).mean()), 4),
            "threshold_at_fpir_1pct": round(threshold, 4), "probes_without_a_face": known_missing}


def build(uri: str, gallery: str, manifest: Path, box_model: Path, archive: str, policy: FacePolicy | None) -> dict:
    made = ingest(manifest, box_model, milvus=uri, gallery=gallery, archive=archive, index_type="FLAT",
                  policy=policy)
    return {"faces": made.embedded, "faces_per_s": round(made.embedded / made.seconds, 1)}


def one_arm(uri: str, gallery: str, aligned: Path, archive: str, policy: FacePolicy) -> dict:
    """Dry run, then the run (allowing what the dry run said it would leave behind), counted."""
    dry = reembed(str(aligned), milvus=uri, gallery=gallery, archive=archive, policy=policy, dry_run=True,
                  threshold=THRESHOLD)
    console = silent()
    moved = reembed(str(aligned), milvus=uri, gallery=gallery, archive=archive, policy=policy, grace_s=0,
                    index_type="FLAT", allow_missing=True, console=console, threshold=THRESHOLD)
    return {"dry_run": {"would_embed": dry.embedded, "cannot": len(dry.skipped), "left_behind": dry.left_behind,
                        "seconds": round(dry.seconds, 1)},
            "run": {"faces_in_service": moved.in_source, "embedded": moved.embedded, "skipped": len(moved.skipped),
                    "left_behind": moved.left_behind, "in_new_collection": moved.in_target,
                    "why": dict(reasons(moved.skipped).most_common()), "seconds": round(moved.seconds, 1),
                    "faces_per_s": round(moved.embedded / moved.seconds, 1),
                    "stages_s": {k: round(v, 1) for k, v in console.times.items()}},
            "dry_run_predicted_the_run": (dry.embedded, sorted(s[0] for s in dry.skipped))
            == (moved.embedded, sorted(s[0] for s in moved.skipped)),
            "target": moved.target}


def throughput(uri: str, manifest: Path, aligned: Path, arms: dict, policy: FacePolicy, repeats: int) -> dict:
    """Each arm's re-embed against the aligned model's ingestion of the gallery's JPEGs, alternating."""
    rounds = []
    for _ in range(repeats):
        row = {}
        client = connect(uri)
        Galleries(client, "scratch").drop_all()
        client.close()
        direct = ingest(manifest, aligned, milvus=uri, gallery="scratch", index_type="FLAT", policy=policy)
        row["ingest_from_jpegs"] = round(direct.embedded / direct.seconds, 1)
        for arm, (gallery, archive, target) in arms.items():
            client = connect(uri)
            galleries = Galleries(client, gallery)
            if galleries.target() == target:
                galleries.rollback()
            galleries.drop(target)
            client.close()
            moved = reembed(str(aligned), milvus=uri, gallery=gallery, archive=archive, policy=policy, grace_s=0,
                            index_type="FLAT", allow_missing=True, threshold=THRESHOLD)
            row[arm] = round(moved.embedded / moved.seconds, 1)
        rounds.append(row)
        print(row, file=sys.stderr)
    medians = {k: float(np.median([r[k] for r in rounds])) for k in rounds[0]}
    return {"rounds": rounds, "median_faces_per_s": medians,
            "ratio_to_ingest": {k: round(v / medians["ingest_from_jpegs"], 2) for k, v in medians.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="side-by-side throughput rounds")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if not LFW.is_dir() or not YUNET.is_file():
        raise SystemExit(f"LFW-gray or YuNet not found under {SHARED}: this benchmark needs ../shared")
    workdir = Path(tempfile.mkdtemp(prefix="arcmatch-reembed-alignment-"))
    uri = str(workdir / "gallery.db")
    init_ray(None)
    started = time.perf_counter()
    _, gallery, known, unknown = split()
    box = onnx_model_dir(workdir, "mobilefacenet.spec.json", "box")
    aligned = onnx_model_dir(workdir, "mobilefacenet_aligned.spec.json", "aligned")
    manifest = workdir / "gallery.csv"
    write_manifest(manifest, gallery)
    policy = FacePolicy(YuNetDetector(YUNET, threads=1))
    box_policy = FacePolicy(None)
    result: dict = {"gallery": len(gallery), "gallery_identities": len({g.identity for g in gallery}),
                    "known_probes": len(known), "unknown_probes": len(unknown), "store": "lite"}
    arms = {"detect_again": ("lfw_plain", str(workdir / "archive-plain"), None),
            "landmarks_kept": ("lfw_marked", str(workdir / "archive-marked"), policy)}
    targets = {}
    for arm, (name, archive, ingest_policy) in arms.items():
        result[arm] = {"ingest_box_model": build(uri, name, manifest, box, archive, ingest_policy)}
        if arm == "detect_again":
            result["before"] = identification(uri, name, box, box_policy, known, unknown)
        result[arm].update(one_arm(uri, name, aligned, archive, policy))
        targets[arm] = (name, archive, result[arm].pop("target"))
        result[arm]["after"] = identification(uri, name, aligned, policy, known, unknown)
    result["throughput"] = throughput(uri, manifest, aligned, targets, policy, args.repeats)
    # the aligned model's own gallery from the JPEGs (the throughput's last scratch ingestion): what it can reach
    result["aligned_ingested_from_jpegs"] = identification(uri, "scratch", aligned, policy, known, unknown)
    result["seconds"] = round(time.perf_counter() - started, 1)
    emit(result, args.out)


if __name__ == "__main__":
    main()
