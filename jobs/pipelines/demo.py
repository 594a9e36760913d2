"""`arcmatch demo`: the whole path on the embedded defaults, from images to "this is X" / "unknown".

Identities are split into four disjoint groups: training identities (the model learns them), calibration
identities (held-out pairs choose the threshold and measure verification accuracy), enrolled identities (a few
gallery photos each go into Milvus, their other photos are probes that must be recognised) and unknown
identities (never enrolled; their photos are probes that must be rejected).

The threshold is chosen for a false-positive identification rate (FPIR, `target_fpir`: the share of unknown
people's photos that match someone), the operating point an identification system is run at, on mock galleries of
the demo's shape made from the calibration identities (indexer.calibration.held_out_trials); given a pair FAR
instead, it is the pairs' threshold at that FAR. The held-out groups are large enough that the figures do not
hang on a few people: 300 calibration identities set the threshold to about 0.006 (sd), and 200 unknown identities
measure the rejection (docs/BENCHMARKS.md, "A threshold for the FPIR the demo asks for").

The same code runs on synthetic faces it draws itself or, with --data, on a real `identity/image` tree. Training
follows trainer/configs/demo.json, chosen by measurement (docs/training.md, "What we tried") to keep the demo near 5
minutes on two CPU cores.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common.errors import BadInput
from embedder.evaluation import calibrate_vectors, identity_interval
from embedder.sources import LabelledImage, decode_items, list_images, write_manifest
from embedder.spec import ModelSpec
from indexer.archive import FaceArchive
from indexer.calibration import Trials
from indexer.galleries import Galleries
from indexer.store import FaceIndex, connect
from jobs.pipelines.demo_report import DemoReport
from jobs.pipelines.ingest import ingest
from jobs.progress import Console, silent
from jobs.service import IdentityService
from jobs.thresholds import fpir_threshold, with_reference
from trainer.config import TrainConfig, read_config_file
from trainer.synthetic import identity_name, write_dataset


@dataclass(frozen=True)
class DemoSize:
    train_identities: int
    images_per_identity: int
    calibration_identities: int
    enrolled_identities: int
    unknown_identities: int
    gallery_images: int  # photos enrolled per known identity; the rest of its photos are probes
    training: dict = field(default_factory=dict)  # overrides of trainer/configs/demo.json
    train_images: int = 0  # photos per training identity when the demo draws them (0: images_per_identity)


SIZES = {
    # 300 calibration identities: with 120 the threshold moved by up to 0.02 (sd) between draws, and 200 unknown
    # identities: with 50 one look-alike moved the rejection by points; 32 photos of each training identity for
    # 5 epochs separate better than 16 for 10, at the same training (docs/training.md, "What we tried")
    "default": DemoSize(400, 16, 300, 50, 200, 3, train_images=32),
    "tiny": DemoSize(50, 6, 6, 6, 6, 2, {"epochs": 2, "batch_size": 32}),
}


@dataclass
class Split:
    train: list[LabelledImage]
    calibration: list[LabelledImage]
    gallery: list[LabelledImage]
    known_probes: list[LabelledImage]
    unknown_probes: list[LabelledImage]


@dataclass
class Groups:
    """Identity names of each disjoint group."""

    train: list[str]
    calibration: list[str]
    enrolled: list[str]
    unknown: list[str]


def plan_groups(counts: dict[str, int], size: DemoSize, seed: int = 0) -> Groups:
    """Which identity goes to which group, from the identities' photo counts alone: so the demo can decide before
    drawing its synthetic faces, and draw the training identities with more photos than the held-out ones."""
    names = sorted(counts)
    rng = np.random.default_rng(seed)
    rng.shuffle(names)
    multi = [n for n in names if counts[n] > size.gallery_images]
    wanted = size.calibration_identities + size.enrolled_identities + size.unknown_identities
    # a small real data set (ORL has 40 people) keeps at least 60% of its identities, or the size's training
    # identities where that is less, for training
    shrink = min(1.0, max(0.4 * len(multi), len(multi) - size.train_identities) / wanted)
    n_cal, n_enr, n_unk = (max(2, int(n * shrink)) for n in
                           (size.calibration_identities, size.enrolled_identities, size.unknown_identities))
    if len(multi) < n_cal + n_enr + n_unk + 2:
        raise BadInput(f"only {len(multi)} identities have over {size.gallery_images} images; the demo needs "
                         f"more than {n_cal + n_enr + n_unk} of them (calibration + enrolled + unknown)")
    cal, enr, unk = multi[:n_cal], multi[n_cal : n_cal + n_enr], multi[n_cal + n_enr : n_cal + n_enr + n_unk]
    held = set(cal) | set(enr) | set(unk)
    return Groups([n for n in names if n not in held and counts[n] >= 2], cal, enr, unk)


def split_identities(items: list[LabelledImage], size: DemoSize, seed: int = 0) -> Split:
    """Disjoint identity groups; only identities with more images than gallery photos can be enrolled or calibrate."""
    by_identity: dict[str, list[LabelledImage]] = {}
    for item in items:
        by_identity.setdefault(item.identity, []).append(item)
    groups = plan_groups({name: len(images) for name, images in by_identity.items()}, size, seed)
    g = size.gallery_images
    return Split(
        train=[i for n in groups.train for i in by_identity[n]],
        calibration=[i for n in groups.calibration for i in by_identity[n]],
        gallery=[i for n in groups.enrolled for i in by_identity[n][:g]],
        known_probes=[i for n in groups.enrolled for i in by_identity[n][g:]],
        unknown_probes=[i for n in groups.unknown for i in by_identity[n]],
    )


def draw_synthetic(root: Path, size: DemoSize, seed: int) -> None:
    """The demo's synthetic faces: `train_images` photos of each training identity, `images_per_identity` of each
    held-out one. An identity's first photos are the same images whatever its count, so a larger training set
    leaves the calibration, gallery and probes of the demo as they were."""
    total = size.train_identities + size.calibration_identities + size.enrolled_identities + size.unknown_identities
    index = {identity_name(i): i for i in range(total)}
    groups = plan_groups(dict.fromkeys(index, size.images_per_identity), size, seed)
    per_identity = dict.fromkeys(index.values(), size.images_per_identity)
    per_identity.update(dict.fromkeys((index[n] for n in groups.train), size.train_images or size.images_per_identity))
    write_dataset(root, range(total), per_identity, seed=seed, workers=min(8, os.cpu_count() or 1))


def training_config(manifest: Path, size: DemoSize, spec: ModelSpec | None, seed: int) -> TrainConfig:
    # the demo's seed unless the size's training overrides set their own (bench/demo_budget.py repeats a budget so)
    data = {**read_config_file("demo"), "seed": seed, **size.training, "data": str(manifest)}
    if spec is not None:
        data["spec"] = spec.to_dict()
    return TrainConfig.from_dict(data)


def run_demo(
    workdir: str | Path,
    *,
    data: str | Path | None = None,
    size: DemoSize = SIZES["default"],
    spec: ModelSpec | None = None,
    target_far: float | None = None,
    target_fpir: float = 0.02,
    seed: int = 0,
    console: Console | None = None,
) -> DemoReport:
    console = console or silent()
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    report = DemoReport(stages=console.times)

    with console.timed("data"):
        if data is None:
            console.say(f"drawing synthetic faces into {workdir / 'data'}")
            draw_synthetic(workdir / "data", size, seed)
            data = workdir / "data"
        split = split_identities(list_images(data), size, seed)
        manifests = {}
        for name in ("train", "calibration", "gallery", "known_probes", "unknown_probes"):
            manifests[name] = workdir / f"{name}.csv"
            write_manifest(manifests[name], getattr(split, name))
            report.counts[name] = len(getattr(split, name))

    config = training_config(manifests["train"], size, spec, seed)
    _train(config, workdir, report, console)

    with console.timed("calibrate"):
        from embedder.embed import open_embedder

        embedder = open_embedder(workdir / "model")
        _calibrate(embedder, split, size, target_far, target_fpir, seed, report, console)
        report.calibration.save(workdir / "model")
        embedder.calibration = report.calibration

    gallery_db = str(workdir / "gallery.db")
    client = connect(gallery_db)
    Galleries(client, "faces").drop_all()  # a fresh gallery for this run's model
    client.close()
    archive = str(workdir / "gallery.archive")  # the face archive, for the next model (indexer/archive.py)
    FaceArchive(archive, "faces").drop()
    console.say(f"ingesting {report.counts['gallery']} gallery photos into Milvus Lite (Ray Data)")
    report.ingest = ingest(manifests["gallery"], workdir / "model", milvus=gallery_db, gallery="faces",
                           errors_csv=workdir / "ingest_errors.csv", archive=archive, console=console)

    service = IdentityService(embedder, FaceIndex(connect(gallery_db), "faces"))  # the alias, read only
    with console.stage("lookup", total=len(split.known_probes) + len(split.unknown_probes)) as bar:
        known = _decisions(service, split.known_probes, bar)
        unknown = _decisions(service, split.unknown_probes, bar)
    service.close()
    identified = np.array([d.identity == p.identity for d, p in zip(known, split.known_probes, strict=True)])
    report.rank1 = float(np.mean(identified))
    nearest_right = np.array([bool(d.candidates) and d.candidates[0].identity == p.identity
                              for d, p in zip(known, split.known_probes, strict=True)])
    report.nearest_correct = float(np.mean(nearest_right))
    rejected = np.array([not d.is_match for d in unknown])
    report.unknown_rejected = float(np.mean(rejected))
    report.rank1_interval = identity_interval(identified, [p.identity for p in split.known_probes], seed=seed)
    report.rejected_interval = identity_interval(rejected, [p.identity for p in split.unknown_probes], seed=seed)
    # the same probes judged at a threshold set on them afterwards: what the model separates, whatever the
    # calibration set's threshold happened to be (docs/training.md, "What we tried")
    trials = Trials(nonmated=np.array([d.score for d in unknown]), mated_right=nearest_right,
                    mated_score=np.array([d.score for d in known]))
    report.rank1_at_fpir_5pct = 1.0 - trials.rates(trials.threshold_for(0.05)).fnir
    return report


def _calibrate(embedder, split: Split, size: DemoSize, target_far: float | None, target_fpir: float, seed: int,
               report: DemoReport, console: Console) -> None:
    """The threshold for target_fpir in a gallery of the demo's shape (or at target_far for pairs, when given),
    and the verification figures, from the calibration identities."""
    data = decode_items(split.calibration, embedder.spec)
    vectors, labels = embedder.embed(data.images), np.asarray(data.labels)
    if target_far is not None:
        console.say(f"calibrating the threshold on held-out identities for a pair FAR of {target_far:.2g}")
        report.verification, report.calibration, _ = calibrate_vectors(vectors, labels, target_far, seed)
    else:
        identities = len(np.unique(labels))
        enrolled = min(len({i.identity for i in split.gallery}), identities // 2)  # the tiny size has few of them
        console.say(f"calibrating the threshold on {identities} held-out identities for an FPIR of "
                    f"{100 * target_fpir:g}% in galleries of {enrolled} people")
        chosen = fpir_threshold(vectors, labels, target_fpir, gallery_identities=enrolled,
                                photos=size.gallery_images, seed=seed)
        report.verification, report.calibration = chosen.verification, chosen.calibration
        report.expected_rank1 = chosen.rank1
    report.calibration = with_reference(report.calibration, vectors, labels, seed)[0]  # for `calibrate` later


def _train(config: TrainConfig, workdir: Path, report: DemoReport, console: Console) -> None:
    from trainer.ray_loop import fit

    console.say(f"training {config.spec.backbone} with ArcFace on {report.counts['train']} images (Ray Train)")
    with console.stage("train", unit="step") as bar:
        result = fit(config, workdir / "model", storage=workdir / "runs", on_progress=bar.show_training)
    report.loss_start, report.loss_end = result.history[0]["loss"], result.history[-1]["loss"]
    report.train_seconds = result.seconds
    report.train_precision = result.history[-1].get("precision", "fp32")


def _decisions(service: IdentityService, probes: list[LabelledImage], bar, batch: int = 64):
    decisions = []
    for start in range(0, len(probes), batch):
        chunk = probes[start : start + batch]
        matches = service.identify([Path(p.path).read_bytes() for p in chunk], select="largest")
        decisions += [faces[0].decision for faces in matches]
        bar.update(len(chunk))
    return decisions
