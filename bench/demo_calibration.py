"""How far the demo's threshold and printed figures move with the way the threshold is chosen and the number of
calibration identities, for trained demo models.

    .venv/bin/python bench/demo_calibration.py demo-work/model [more model dirs] [--identities 1000] [--out FILE]

On fresh synthetic identities (drawn once into the bench cache, 16 photos each, far from any demo's own):
- the exam: the second half of them in demo-shaped folds (50 enrolled with 3 gallery photos, 50 unknown), pooled:
  the threshold that accepts 2% of its unknown probes, and rank-1 there (what a well-calibrated demo would print,
  on average over draws of people); per fold at the demo's own threshold (the model's calibration.json): the
  spread that one draw of 50 + 50 people adds;
- calibration: 12 draws of N identities from the first half (N = 120, 200, 300), each calibrated both ways, the
  union bound (a pair FAR of 2% / 150 gallery faces, the demo's rule before mock galleries) and held-out trials
  (FPIR 2% in mock galleries of 50 x 3, indexer.calibration.held_out_trials): the thresholds' mean and spread,
  and the exam's rank-1 and rejection at them (mean and worst of the 12).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import CACHE, demo_folds, emit, rank1_and_rejected  # noqa: E402
from embedder.evaluation import calibrate_vectors  # noqa: E402
from embedder.layout import Calibration  # noqa: E402
from embedder.sources import decode_items, list_images  # noqa: E402
from indexer.calibration import Trials, held_out_trials  # noqa: E402

FIRST = 30_000  # identity indices far above the demo's own and bench/demo_budget.py's fixed set
ENROLLED, PHOTOS, FPIR, DRAWS = 50, 3, 0.02, 12


def fresh_identities(count: int) -> Path:
    from trainer.synthetic import write_dataset

    root = CACHE / f"demo-calibration-{count}"
    if not (root / "complete").exists():
        write_dataset(root, range(FIRST, FIRST + count), 16, seed=0, workers=2)
        (root / "complete").touch()
    return root


def embedded(model: Path, root: Path) -> tuple[np.ndarray, np.ndarray]:
    from embedder.embed import open_embedder

    key = hashlib.sha256((model / "model.pt").read_bytes()).hexdigest()[:16]
    cache = root.with_name(root.name + f"-{key}.npz")
    if cache.exists():
        data = np.load(cache)
        return data["vectors"], data["labels"]
    embedder = open_embedder(model)
    data = decode_items(list_images(root), embedder.spec)
    vectors, labels = embedder.embed(data.images), np.asarray(data.labels)
    np.savez(cache, vectors=vectors, labels=labels)
    return vectors, labels


def one_model(model: Path, root: Path) -> dict:
    vectors, labels = embedded(model, root)
    names = np.unique(labels)
    held, exam_names = names[: len(names) // 2], names[len(names) // 2 :]
    folds = demo_folds(vectors, labels, exam_names, enrolled=ENROLLED, photos=PHOTOS)
    pooled = Trials(*(np.concatenate([getattr(f, k) for f in folds]) for k in ("nonmated", "mated_right",
                                                                                 "mated_score")))
    truth = pooled.threshold_for(FPIR)
    out = {"exam": {"folds": len(folds), "fpir_2pct_threshold": round(truth, 4),
                    "rank1_at_fpir_2pct": round(rank1_and_rejected(pooled, truth)[0], 3)}}
    shipped = Calibration.load(model)
    if shipped is not None:
        per_fold = np.array([rank1_and_rejected(f, shipped.threshold) for f in folds])
        out["exam"]["at_the_demos_threshold"] = {
            "threshold": round(shipped.threshold, 4), "rank1_mean": round(per_fold[:, 0].mean(), 3),
            "rank1_sd": round(per_fold[:, 0].std(), 3), "rejected_mean": round(per_fold[:, 1].mean(), 3),
            "rejected_sd": round(per_fold[:, 1].std(), 3)}
    rng = np.random.default_rng(1)
    for count in (120, 200, 300):
        by_method: dict[str, list[float]] = {"union_bound": [], "held_out_trials": []}
        for draw in range(DRAWS):
            pick = rng.choice(held, count, replace=False)
            mask = np.isin(labels, pick)
            by_method["union_bound"].append(
                calibrate_vectors(vectors[mask], labels[mask], FPIR / (ENROLLED * PHOTOS), seed=draw)[1].threshold)
            by_method["held_out_trials"].append(held_out_trials(
                vectors[mask], labels[mask], gallery_identities=ENROLLED, photos=PHOTOS, seed=draw).threshold_for(FPIR))
        for method, thresholds in by_method.items():
            at = np.array([rank1_and_rejected(pooled, t) for t in thresholds])
            out[f"{method}_{count}"] = {
                "threshold_mean": round(float(np.mean(thresholds)), 4),
                "threshold_sd": round(float(np.std(thresholds)), 4),
                "rank1_mean": round(at[:, 0].mean(), 3), "rank1_worst": round(at[:, 0].min(), 3),
                "rejected_mean": round(at[:, 1].mean(), 3), "rejected_worst": round(at[:, 1].min(), 3)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", type=Path, nargs="+")
    parser.add_argument("--identities", type=int, default=1000)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    root = fresh_identities(args.identities)
    emit({str(model): one_model(model, root) for model in args.models}, args.out)


if __name__ == "__main__":
    main()
