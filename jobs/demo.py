"""`arcmatch demo`: the whole path on the embedded defaults, from images to "this is X" / "unknown".

Identities are split into four disjoint groups: training identities (the model learns them), calibration
identities (held-out pairs choose the threshold and measure verification accuracy), enrolled identities (a few
gallery photos each go into Milvus, their other photos are probes that must be recognised) and unknown
identities (never enrolled; their photos are probes that must be rejected).

An unknown probe is compared with every gallery face, so its chance of a false match (FPIR) is about the gallery
size times the pair false accept rate (FAR). Unless a FAR is given, the demo calibrates for the FAR that keeps
FPIR at `target_fpir` for its gallery: the operating point an identification system is run at.

The same code runs on synthetic faces it draws itself or, with --data, on a real `identity/image` tree.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from embedder.checkpoint import Calibration
from embedder.embed import TorchEmbedder
from embedder.spec import ModelSpec
from indexer.store import FaceIndex, connect
from jobs.ingest import IngestSummary, ingest
from jobs.lookup import Lookup
from trainer.config import TrainConfig
from trainer.data import LabelledImage, list_images, write_manifest
from trainer.evaluate import Verification, calibrate
from trainer.synthetic import write_dataset


@dataclass(frozen=True)
class DemoSize:
    train_identities: int
    images_per_identity: int
    calibration_identities: int
    enrolled_identities: int
    unknown_identities: int
    gallery_images: int  # photos enrolled per known identity; the rest of its photos are probes
    epochs: int
    batch_size: int


SIZES = {
    "default": DemoSize(400, 12, 40, 50, 50, 3, 16, 64),
    "tiny": DemoSize(50, 6, 6, 6, 6, 2, 2, 32),
}


@dataclass
class DemoReport:
    loss_start: float = float("nan")
    loss_end: float = float("nan")
    verification: Verification | None = None
    calibration: Calibration | None = None
    rank1: float = float("nan")
    nearest_correct: float = float("nan")
    unknown_rejected: float = float("nan")
    ingest: IngestSummary | None = None
    train_seconds: float = 0.0
    stages: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def lines(self) -> list[str]:
        v, c = self.verification, self.calibration
        out = [
            "arcmatch demo report",
            f"  data: {self.counts}",
            f"  training loss: {self.loss_start:.3f} -> {self.loss_end:.3f} ({self.train_seconds:.0f} s)",
        ]
        if v is not None:
            out.append(f"  verification on held-out pairs: {100 * v.accuracy_mean:.2f}% +- {100 * v.accuracy_std:.2f} "
                       f"({v.folds}-fold), ROC AUC {v.auc:.4f}")
        if c is not None:
            out.append(f"  threshold: cosine {c.threshold:.4f} at FAR {c.measured_far:.4f} "
                       f"(target {c.target_far:.2g}), TAR {c.tar:.3f} on {c.pairs} pairs")
        out += [
            f"  enrolled probes identified correctly (rank-1, above threshold): {self.rank1:.3f}"
            f"  (nearest gallery identity correct: {self.nearest_correct:.3f})",
            f"  unknown probes rejected: {self.unknown_rejected:.3f}",
        ]
        if self.ingest is not None:
            out += ["  gallery ingestion: " + line for line in self.ingest.lines()]
        out.append("  wall time: " + ", ".join(f"{k} {v:.0f} s" for k, v in self.stages.items()))
        return out


@dataclass
class Split:
    train: list[LabelledImage]
    calibration: list[LabelledImage]
    gallery: list[LabelledImage]
    known_probes: list[LabelledImage]
    unknown_probes: list[LabelledImage]


def split_identities(items: list[LabelledImage], size: DemoSize, seed: int = 0) -> Split:
    """Disjoint identity groups; only identities with more images than gallery photos can be enrolled or calibrate."""
    by_identity: dict[str, list[LabelledImage]] = {}
    for item in items:
        by_identity.setdefault(item.identity, []).append(item)
    names = sorted(by_identity)
    rng = np.random.default_rng(seed)
    rng.shuffle(names)
    multi = [n for n in names if len(by_identity[n]) > size.gallery_images]
    wanted = size.calibration_identities + size.enrolled_identities + size.unknown_identities
    # a small real data set (ORL has 40 people) keeps at least 70% of its identities for training
    shrink = min(1.0, 0.3 * len(multi) / wanted)
    n_cal, n_enr, n_unk = (max(2, int(n * shrink)) for n in
                           (size.calibration_identities, size.enrolled_identities, size.unknown_identities))
    if len(multi) < n_cal + n_enr + n_unk + 2:
        raise ValueError(f"only {len(multi)} identities have over {size.gallery_images} images; the demo needs "
                         f"more than {n_cal + n_enr + n_unk} of them (calibration + enrolled + unknown)")
    cal, enr, unk = multi[:n_cal], multi[n_cal : n_cal + n_enr], multi[n_cal + n_enr : n_cal + n_enr + n_unk]
    held = set(cal) | set(enr) | set(unk)
    train = [n for n in names if n not in held and len(by_identity[n]) >= 2]
    g = size.gallery_images
    return Split(
        train=[i for n in train for i in by_identity[n]],
        calibration=[i for n in cal for i in by_identity[n]],
        gallery=[i for n in enr for i in by_identity[n][:g]],
        known_probes=[i for n in enr for i in by_identity[n][g:]],
        unknown_probes=[i for n in unk for i in by_identity[n]],
    )


def make_synthetic(root: Path, size: DemoSize, seed: int) -> list[LabelledImage]:
    held = size.calibration_identities + size.enrolled_identities + size.unknown_identities
    write_dataset(root, range(size.train_identities + held), size.images_per_identity, seed=seed)
    return list_images(root)


def run_demo(
    workdir: str | Path,
    *,
    data: str | Path | None = None,
    size: DemoSize = SIZES["default"],
    spec: ModelSpec | None = None,
    target_far: float | None = None,
    target_fpir: float = 0.02,
    seed: int = 0,
    log=print,
) -> DemoReport:
    from trainer.ray_loop import fit

    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    report = DemoReport()
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        report.stages[stage] = now - clock
        clock = now

    if data is None:
        log(f"drawing synthetic faces into {workdir / 'data'}")
        items = make_synthetic(workdir / "data", size, seed)
    else:
        items = list_images(data)
    split = split_identities(items, size, seed)
    manifests = {}
    for name in ("train", "calibration", "gallery", "known_probes", "unknown_probes"):
        manifests[name] = workdir / f"{name}.csv"
        write_manifest(manifests[name], getattr(split, name))
        report.counts[name] = len(getattr(split, name))
    lap("data")

    spec = spec or ModelSpec(backbone="resnet10t", embedding_size=128, input_size=(64, 64))
    config = TrainConfig(data=str(manifests["train"]), spec=spec, head="arcface", scale=32.0,
                         margins={"m2": 0.4}, epochs=size.epochs, batch_size=size.batch_size, optimizer="adamw",
                         lr=2e-3, weight_decay=5e-4, warmup_epochs=1.0, cpus_per_worker=2, seed=seed)
    log(f"training {spec.backbone} with ArcFace on {report.counts['train']} images (Ray Train)")
    result = fit(config, workdir / "model", storage=workdir / "runs")
    report.loss_start, report.loss_end = result.history[0]["loss"], result.history[-1]["loss"]
    report.train_seconds = result.seconds
    lap("train")

    if target_far is None:
        # a probe of an unknown person meets every gallery face: FPIR ~ gallery size x pair FAR
        target_far = target_fpir / max(1, report.counts["gallery"])
    log(f"calibrating the threshold on held-out identities for a pair FAR of {target_far:.2g}")
    embedder = TorchEmbedder.from_checkpoint(workdir / "model")
    report.verification, report.calibration, _ = calibrate(embedder, split.calibration, target_far, seed)
    report.calibration.save(workdir / "model")
    embedder.calibration = report.calibration
    lap("calibrate")

    log("ingesting the gallery into Milvus Lite (Ray Data)")
    gallery_db = str(workdir / "gallery.db")
    client = connect(gallery_db)
    if client.has_collection("faces"):  # a fresh gallery for this run's model
        client.drop_collection("faces")
    report.ingest = ingest(manifests["gallery"], workdir / "model", milvus=gallery_db, collection="faces",
                           errors_csv=workdir / "ingest_errors.csv", progress=lambda _: None)
    index = FaceIndex(client, "faces")
    lap("ingest")

    log("looking up probes")
    lookup = Lookup(embedder, index)
    report.rank1, report.nearest_correct = _score_known(lookup, split.known_probes)
    unknown = _decisions(lookup, split.unknown_probes)
    report.unknown_rejected = float(np.mean([not d.is_match for d in unknown]))
    lap("lookup")
    client.close()
    return report


def _decisions(lookup: Lookup, probes: list[LabelledImage]):
    return lookup.identify_images([Path(p.path).read_bytes() for p in probes])


def _score_known(lookup: Lookup, probes: list[LabelledImage]) -> tuple[float, float]:
    decisions = _decisions(lookup, probes)
    accepted = [d.identity == p.identity for d, p in zip(decisions, probes, strict=True)]
    nearest = [bool(d.candidates) and d.candidates[0].identity == p.identity
               for d, p in zip(decisions, probes, strict=True)]
    return float(np.mean(accepted)), float(np.mean(nearest))
