"""Which gallery calibration keeps its promise: the leave-one-identity-out top-1 rule against the tail model
(indexer/tail.py), on LFW-gray galleries of one photo per person, clean and with planted duplicates.

For each gallery size and draw: enrolled people are drawn from those with two or more photos (one photo each in
the gallery; their other photos are the known probes); with `--duplicates`, that share of the gallery's names are
a second photo of an enrolled person under a name of its own. Unknown probes: one photo of each of up to 3,000
people never enrolled. Each rule chooses the threshold for the target FPIR from the gallery's vectors alone; the
unknown probes then say which FPIR it reached, and the known probes how many are identified there, against the
best possible at that same FPIR (the threshold that accepts as many unknown probes).

    .venv/bin/python bench/calibrate_tail.py [--sizes 100 300 1000] [--draws 10] [--fpir 0.01] [--out FILE]

Vectors: the shared MobileFaceNet behind its LFW crop box, embedded once and cached (bench/harness.py).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import CACHE, SHARED, embed_cached, emit, onnx_model_dir  # noqa: E402
from indexer.calibration import Trials  # noqa: E402
from indexer.tail import fit_gallery, identity_scores  # noqa: E402

LFW = SHARED / "data" / "lfw_gray"


def load() -> tuple[np.ndarray, np.ndarray]:
    paths = sorted(LFW.glob("*/*.jpg"))
    vectors = embed_cached(onnx_model_dir(Path(tempfile.mkdtemp()), "mobilefacenet.spec.json"), paths,
                           CACHE / "lfw_gray_mobilefacenet.npz")
    return np.stack([vectors[str(p)] for p in paths]), np.array([p.parent.name for p in paths])


def one_draw(vectors, people, size: int, duplicates: float, target: float, rng) -> dict:
    by_person = {name: np.flatnonzero(people == name) for name in np.unique(people)}
    several = [n for n, rows in by_person.items() if len(rows) >= 2]
    planted = int(round(duplicates * size))
    enrolled = rng.choice(several, size - planted, replace=False)
    gallery, labels, known, known_labels = [], [], [], []
    for name in enrolled:
        rows = rng.permutation(by_person[name])
        gallery.append(rows[0])
        labels.append(name)
        known += list(rows[1:])
        known_labels += [name] * (len(rows) - 1)
    for name in rng.choice(enrolled, planted, replace=False):  # one person, a second name
        rows = [r for r in by_person[name] if r not in gallery]
        gallery.append(rows[0])
        labels.append(f"{name} (second name)")
    strangers = [n for n in by_person if n not in set(enrolled)]
    unknown = [rng.choice(by_person[n]) for n in rng.choice(strangers, min(3000, len(strangers)), replace=False)]
    gallery, labels = np.asarray(gallery), np.asarray(labels)
    g = vectors[gallery]

    scores, _, _ = identity_scores(g, labels)
    old = Trials(np.nanmax(scores, axis=1), np.zeros(0, bool), np.zeros(0, np.float32)).threshold_for(target)
    model, _, _, _ = fit_gallery(g, labels)
    new = model.threshold_for(target)

    stranger_best = (vectors[unknown] @ g.T).max(axis=1)
    probe_scores = vectors[known] @ g.T
    right = labels[probe_scores.argmax(axis=1)] == np.asarray(known_labels)
    best = probe_scores.max(axis=1)

    def judged(threshold: float) -> dict:
        reached = float((stranger_best >= threshold).mean())
        accepted = int((stranger_best >= threshold).sum())  # the best threshold at that FPIR accepts as many
        ideal = np.sort(stranger_best)[::-1][accepted] + 1e-6 if accepted < len(stranger_best) else -1.0
        return {"threshold": round(threshold, 4), "fpir": round(reached, 4),
                "identified": round(float((right & (best >= threshold)).mean()), 4),
                "best_identified_at_that_fpir": round(float((right & (best >= ideal)).mean()), 4)}

    return {"old": judged(old), "new": judged(new), "suspects": len(model.suspects), "planted": planted}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 300, 1000])
    parser.add_argument("--draws", type=int, default=10)
    parser.add_argument("--fpir", type=float, default=0.01)
    parser.add_argument("--duplicates", type=float, nargs="+", default=[0.0, 0.02])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    vectors, people = load()
    result = {"target_fpir": args.fpir, "draws": args.draws, "rows": []}
    for size in args.sizes:
        for share in args.duplicates:
            draws = [one_draw(vectors, people, size, share, args.fpir, np.random.default_rng(seed))
                     for seed in range(args.draws)]
            row = {"size": size, "duplicates": share}
            for rule in ("old", "new"):
                reached = np.array([d[rule]["fpir"] for d in draws])
                gap = np.array([d[rule]["best_identified_at_that_fpir"] - d[rule]["identified"] for d in draws])
                row[rule] = {"fpir_median": round(float(np.median(reached)), 4),
                             "fpir_range": [round(float(reached.min()), 4), round(float(reached.max()), 4)],
                             "within_factor_2": int(((reached >= args.fpir / 2) & (reached <= args.fpir * 2)).sum()),
                             "identified_median": round(float(np.median([d[rule]["identified"] for d in draws])), 4),
                             "gap_to_best_median": round(float(np.median(gap)), 4)}
            row["suspects_median"] = float(np.median([d["suspects"] for d in draws]))
            row["planted"] = draws[0]["planted"]
            result["rows"].append(row)
            print(row, file=sys.stderr)
    emit(result, args.out)


if __name__ == "__main__":
    main()
