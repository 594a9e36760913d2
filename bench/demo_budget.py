"""What a training budget costs the demo: the whole demo (same synthetic data, seed, calibration, gallery and probes)
with overrides of trainer/configs/demo.json, one full run per budget (issue 15).

    .venv/bin/python bench/demo_budget.py --train '{"epochs": 10}' --train '{"spec": {...}}' [--out FILE]

Each --train is one run's overrides (JSON; "spec" holds the fields of the model spec it changes). Reported
per run: the figures the demo prints (verification, threshold, rank-1 above the threshold, nearest identity right,
unknown rejected), the training's seconds and each stage's wall time. Runs are sequential: their wall times
compare only on a quiet machine, their accuracy figures always.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import emit  # noqa: E402
from embedder.spec import ModelSpec  # noqa: E402
from jobs.pipelines.demo import SIZES, run_demo  # noqa: E402
from jobs.runtime import init_ray  # noqa: E402
from trainer.config import read_config_file  # noqa: E402


def one_run(overrides: dict, workdir: Path) -> dict:
    overrides = dict(overrides)
    spec = None
    if "spec" in overrides:  # fields of the shipped spec that the run changes
        spec = ModelSpec.from_dict({**read_config_file("demo")["spec"], **overrides.pop("spec")})
    size = replace(SIZES["default"], training=overrides)
    report = run_demo(workdir, size=size, spec=spec)
    v, c = report.verification, report.calibration
    return {"training": {**overrides, **({"spec": spec.to_dict()} if spec else {})},
            "loss": [round(report.loss_start, 3), round(report.loss_end, 3)],
            "verification": round(v.accuracy_mean, 4), "auc": round(v.auc, 4),
            "threshold": round(c.threshold, 4), "tar": round(c.tar, 3),
            "rank1": round(report.rank1, 3), "nearest_correct": round(report.nearest_correct, 3),
            "unknown_rejected": round(report.unknown_rejected, 3),
            "train_seconds": round(report.train_seconds, 1),
            "stages_s": {k: round(s, 1) for k, s in report.stages.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", action="append", type=json.loads, default=[],
                        help="one run's overrides of trainer/configs/demo.json, as JSON (repeatable; none: as shipped)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    init_ray(None)
    runs = []
    for overrides in args.train or [{}]:
        workdir = Path(tempfile.mkdtemp(prefix="arcmatch-demo-budget-"))
        try:
            runs.append(one_run(overrides, workdir))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
    emit({"runs": runs}, args.out)


if __name__ == "__main__":
    main()
