"""Where a trained demo model misses: its own probes split by whether the synthetic photo has an occluder.

    .venv/bin/python bench/demo_misses.py demo-work [DIR ...] [--seed 0] [--out FILE]

Each DIR is a demo's work directory (`arcmatch demo` keeps `demo-work`; `bench/demo_budget.py --keep` one per run).
The demo's photos are drawn from seeded generators, so replaying an identity's generator (trainer.synthetic.draw)
says which photos were occluded without looking at them; each replayed image is compared with the file, so a
directory drawn with another seed is refused rather than misjudged.

Reported, at the model's calibrated threshold (what the demo prints) and at the thresholds that reject 98% and 95% of
the demo's own unknown probes: rank-1 of all enrolled probes, of the clean ones and of the occluded ones; unknown
probes rejected, clean and occluded; and how many of the misses had an occluded probe or an occluded nearest
gallery photo.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import emit  # noqa: E402
from embedder.embed import open_embedder  # noqa: E402
from embedder.sources import list_images  # noqa: E402
from indexer.calibration import Trials  # noqa: E402
from trainer.synthetic import draw, make_identity  # noqa: E402

GROUPS = ("gallery", "known_probes", "unknown_probes")


def occluded(paths: list[str], images: np.ndarray, seed: int) -> np.ndarray:
    """Whether each demo photo (`.../person_<index>/<n>.png`, decoded in `images`) was drawn with an occluder."""
    wanted: dict[int, dict[int, int]] = {}
    for i, path in enumerate(paths):
        p = Path(path)
        wanted.setdefault(int(p.parent.name.rsplit("_", 1)[1]), {})[int(p.stem)] = i
    flags = np.zeros(len(paths), dtype=bool)
    for index, photos in wanted.items():
        ident, rng = make_identity(seed, index), np.random.default_rng([seed, index, 1])
        for n in range(max(photos) + 1):
            photo = draw(ident, rng, images.shape[1])  # the draws' noise has the image's shape
            if n in photos:
                if not np.array_equal(images[photos[n]], photo.image):
                    raise SystemExit(f"{paths[photos[n]]} is not photo {n} of identity {index} at seed {seed}: "
                                     "pass the demo's --seed")
                flags[photos[n]] = photo.occluder is not None
    return flags


def misses(workdir: Path, seed: int) -> dict:
    embedder = open_embedder(workdir / "model")
    groups = {name: list_images(workdir / f"{name}.csv") for name in GROUPS}
    images = {name: np.stack([np.asarray(Image.open(i.path).convert("RGB")) for i in items])
              for name, items in groups.items()}
    vectors = {name: embedder.embed(batch) for name, batch in images.items()}
    covered = {name: occluded([i.path for i in groups[name]], images[name], seed) for name in GROUPS}
    gallery_ids, known_ids = (np.array([i.identity for i in groups[name]]) for name in GROUPS[:2])
    scores = vectors["known_probes"] @ vectors["gallery"].T
    nearest = scores.argmax(axis=1)
    right = gallery_ids[nearest] == known_ids
    best, nonmated = scores.max(axis=1), (vectors["unknown_probes"] @ vectors["gallery"].T).max(axis=1)
    probe_cover, unknown_cover = covered["known_probes"], covered["unknown_probes"]
    trials = Trials(nonmated=nonmated, mated_right=right, mated_score=best)

    def at(threshold: float) -> dict:
        hit, rejected = right & (best >= threshold), nonmated < threshold
        missed = ~hit
        return {"threshold": round(float(threshold), 4),
                "rank1": round(float(hit.mean()), 3), "rank1_clean": round(float(hit[~probe_cover].mean()), 3),
                "rank1_occluded": round(float(hit[probe_cover].mean()), 3),
                "rejected": round(float(rejected.mean()), 3),
                "rejected_clean": round(float(rejected[~unknown_cover].mean()), 3),
                "rejected_occluded": round(float(rejected[unknown_cover].mean()), 3),
                "misses": int(missed.sum()), "misses_probe_occluded": int((missed & probe_cover).sum()),
                "misses_nearest_gallery_occluded": int((missed & covered["gallery"][nearest]).sum())}

    return {"occluded_share": {name: round(float(flags.mean()), 3) for name, flags in covered.items()},
            "calibrated": at(embedder.calibration.threshold),
            "fpir_2pct": at(trials.threshold_for(0.02)), "fpir_5pct": at(trials.threshold_for(0.05))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workdirs", type=Path, nargs="+")
    parser.add_argument("--seed", type=int, default=0, help="the demo's data seed (arcmatch demo --seed)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    emit({str(w): misses(w, args.seed) for w in args.workdirs}, args.out)


if __name__ == "__main__":
    main()
