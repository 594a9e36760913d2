"""What a training budget costs the demo: the whole demo (same synthetic data, seed, calibration, gallery and probes)
with overrides of trainer/configs/demo.json, one full run per budget.

    .venv/bin/python bench/demo_budget.py --train '{"epochs": 10}' --train '{"spec": {...}}' [--keep DIR] [--out FILE]
    .venv/bin/python bench/demo_budget.py --evaluate DIR/*/model [--flip-tta]

Each --train is one run's overrides (JSON; "spec" holds the fields of the model spec it changes, "size" those of the
demo's DemoSize: identities and photos per group, `train_images` the photos of each training identity; a "seed"
trains the same budget from another initialisation and batch order on the same data). Reported per run: the figures
the demo prints (verification, threshold, rank-1 above the threshold, nearest identity right, unknown rejected), the
training's seconds and each stage's wall time. Runs are sequential: their wall times compare only on a quiet
machine, their accuracy figures always.

Also reported, because the demo's own figures hang on its threshold, which with few calibration identities (40
in the first demo) rests on a handful of look-alike pairs and moves a budget along the rank-1 / rejection
trade-off by chance, and on which identities its split happened to enrol: the trained model's figures on a fixed
evaluation set of fresh synthetic identities, the same for every run (drawn once into the bench cache). Three folds
each shaped like the demo (50 enrolled identities with 3 gallery photos and 9 probes, 50 unknown identities with
12 probes; the gallery search done exactly in numpy, as the demo's flat Lite index does), averaged:
- `steady`: rank-1 above the threshold and unknown rejected, the threshold calibrated as the demo does (FPIR 2% on
  mock galleries of 50 x 3, indexer.calibration.held_out_trials; before those, a pair FAR of 2% / 150 gallery
  faces) but on 200 fresh identities;
- `rank1_at_fpir_5pct`: rank-1 above the threshold that rejects 95% of the unknown probes (open-set TPIR);
  `rank1_at_fpir_2pct` the same at 98%, the demo's operating point;
- `best_balanced`: the best min(rank-1, rejection) any threshold reaches. A budget can hold both demo figures at
  0.95 only where this is 0.95 or more.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import CACHE, demo_folds, emit, rank1_and_rejected  # noqa: E402
from embedder.embed import open_embedder  # noqa: E402
from embedder.sources import decode_items, list_images  # noqa: E402
from embedder.spec import ModelSpec  # noqa: E402
from indexer.calibration import held_out_trials  # noqa: E402
from jobs.pipelines.demo import SIZES, run_demo  # noqa: E402
from jobs.runtime import init_ray  # noqa: E402
from trainer.config import read_config_file  # noqa: E402
from trainer.synthetic import write_dataset  # noqa: E402

EVAL_IDENTITIES = range(10_000, 10_500)  # far above any demo's own identities
FOLDS, ENROLLED, GALLERY_PHOTOS, CALIBRATION = 3, 50, 3, 200


def evaluation_set() -> Path:
    root = CACHE / "demo-budget-eval"
    if not (root / "complete").exists():
        write_dataset(root, EVAL_IDENTITIES, 12, seed=0)
        (root / "complete").touch()
    return root


def separation(model_dir: Path, root: Path, *, flip_tta: bool = False) -> dict:
    """The trained model's open-set identification figures on the fixed evaluation set (module docstring);
    flip_tta: embed each image and its mirror image, whatever the model's spec says."""
    embedder = open_embedder(model_dir)
    embedder.flip_tta = flip_tta
    data = decode_items(list_images(root), embedder.spec)
    vectors, labels = embedder.embed(data.images), data.labels
    names = np.unique(labels)
    held = np.isin(labels, names[:CALIBRATION])
    threshold = held_out_trials(vectors[held], labels[held], gallery_identities=ENROLLED,
                                photos=GALLERY_PHOTOS).threshold_for(0.02)
    figures = []
    for trials in demo_folds(vectors, labels, names[CALIBRATION : CALIBRATION + 2 * ENROLLED * FOLDS],
                             enrolled=ENROLLED, photos=GALLERY_PHOTOS):
        def at(t: float, trials=trials) -> tuple[float, float]:
            return rank1_and_rejected(trials, t)

        candidates = np.unique(np.concatenate([trials.nonmated, trials.mated_score]))
        figures.append([*at(threshold), at(trials.threshold_for(0.05))[0], at(trials.threshold_for(0.02))[0],
                        max(min(at(t)) for t in candidates)])
    steady_rank1, steady_rejected, at_fpir5, at_fpir2, balanced = np.mean(figures, axis=0)
    return {"steady": {"threshold": round(threshold, 4), "rank1": round(steady_rank1, 3),
                       "unknown_rejected": round(steady_rejected, 3)},
            "rank1_at_fpir_5pct": round(at_fpir5, 3), "rank1_at_fpir_2pct": round(at_fpir2, 3),
            "best_balanced": round(balanced, 3)}


def one_run(overrides: dict, workdir: Path) -> dict:
    overrides = dict(overrides)
    spec = None
    if "spec" in overrides:  # fields of the shipped spec that the run changes
        spec = ModelSpec.from_dict({**read_config_file("demo")["spec"], **overrides.pop("spec")})
    size = replace(SIZES["default"], **overrides.pop("size", {}), training=overrides)
    report = run_demo(workdir, size=size, spec=spec)
    v, c = report.verification, report.calibration
    shape = {k: v for k, v in asdict(size).items() if k != "training"}
    return {**separation(workdir / "model", evaluation_set()), "size": shape,
            "training": {**overrides, **({"spec": spec.to_dict()} if spec else {})},
            "loss": [round(report.loss_start, 3), round(report.loss_end, 3)],
            "verification": round(v.accuracy_mean, 4), "auc": round(v.auc, 4),
            "threshold": round(c.threshold, 4), "tar": round(c.tar, 3),
            "rank1": round(report.rank1, 3), "nearest_correct": round(report.nearest_correct, 3),
            "unknown_rejected": round(report.unknown_rejected, 3),
            "demo_rank1_at_fpir_5pct": round(report.rank1_at_fpir_5pct, 3),
            "train_seconds": round(report.train_seconds, 1),
            "stages_s": {k: round(s, 1) for k, s in report.stages.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", action="append", type=json.loads, default=[],
                        help="one run's overrides of trainer/configs/demo.json, as JSON (repeatable; none: as shipped)")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--evaluate", type=Path, nargs="+", default=[],
                        help="only the fixed-set figures of these trained model directories (no demo run)")
    parser.add_argument("--flip-tta", action="store_true",
                        help="with --evaluate: score with flip-TTA even where the model's spec does not ask for it")
    parser.add_argument("--keep", type=Path, help="keep each run's work directory (model, manifests) under this one")
    args = parser.parse_args()
    if args.evaluate:
        emit({str(model): separation(model, evaluation_set(), flip_tta=args.flip_tta) for model in args.evaluate},
             args.out)
        return
    init_ray(None)
    runs = []
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    for overrides in args.train or [{}]:
        workdir = Path(tempfile.mkdtemp(prefix="arcmatch-demo-budget-", dir=args.keep))
        try:
            runs.append(one_run(overrides, workdir))
        finally:
            if not args.keep:
                shutil.rmtree(workdir, ignore_errors=True)
        print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
    emit({"runs": runs}, args.out)


if __name__ == "__main__":
    main()
