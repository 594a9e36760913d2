"""Whether the faces a search service keeps (answered unknown) can serve a calibration as strangers, on LFW-gray.

    .venv/bin/python bench/kept_faces.py --sizes 100 300 --draws 10 --genuine-share 0.5

Each draw: a gallery of one photo per person; its threshold from the gallery alone at the target FPIR (what a
service runs with before any stranger is known). Then a stream of searches: one photo each of 500 never-enrolled
people and, making up `--genuine-share` of the stream, other photos of the enrolled. What was answered unknown at
that threshold (strangers below it, and enrolled people it missed) is what ARCMATCH_KEEP_UNKNOWN_FACES keeps.
The calibration is then made again five ways, as `calibrate` reads unlabelled faces (indexer/strangers.py):
from the gallery alone; with every kept face as a stranger, read as if whole, and read below the threshold they
were answered unknown under (tail.truncated); with only the kept faces a person confirmed (the enrolled among them
named, the rest `gallery stranger --kept`), read below it (what `calibrate` does with them); and with all 500
strangers' photos ingested as unlabelled faces instead. Cells: the FPIR reached on the
other never-enrolled people's photos (each person once), as bench/calibrate_tail.py measures it, and the share of
the enrolled's other photos identified (all of them, the searched ones too). Writes a JSON line of figures.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.calibrate_tail import load, never_enrolled  # noqa: E402
from bench.harness import emit  # noqa: E402
from indexer.gallery_tail import matched  # noqa: E402
from indexer.strangers import fit_with_strangers  # noqa: E402
from indexer.tail import clustered, fit_gallery, truncated  # noqa: E402

STREAM_STRANGERS = 500
RULES = ("gallery_alone", "kept_faces", "kept_all_cut", "kept_confirmed_cut", "all_strangers_ingested")


def one_draw(vectors, people, by_person, size: int, target: float, genuine_share: float, rng) -> dict:
    several = [n for n, rows in by_person.items() if len(rows) >= 2]
    enrolled = rng.choice(several, size, replace=False)
    photos = {name: rng.permutation(by_person[name]) for name in enrolled}
    g, labels = vectors[[photos[name][0] for name in enrolled]], np.asarray(enrolled)
    strangers, unknown, weight, _, _ = never_enrolled(by_person, enrolled, STREAM_STRANGERS, rng)
    unknown_best = (vectors[unknown] @ g.T).max(axis=1)

    def reached(threshold: float) -> float:
        return float(weight[unknown_best >= threshold].sum())

    model, evidence, _, own = fit_gallery(g, labels)
    first = matched(model, evidence, own, size)[0].threshold_for(target)
    others = np.asarray([p for name in enrolled for p in photos[name][1:]])
    wanted = int(round(genuine_share / (1 - genuine_share) * len(strangers))) if genuine_share < 1 else len(others)
    genuine = rng.choice(others, min(wanted, len(others)), replace=False)
    stream = np.concatenate([np.asarray(strangers, int), genuine.astype(int)])
    scores = vectors[stream] @ g.T
    kept = stream[scores.max(axis=1) < first]  # answered unknown: nobody at or above the threshold

    def again(faces: np.ndarray, cut: float | None = None) -> float:
        fitted, more, _, whose, _ = fit_with_strangers(g, labels, np.arange(size), frozenset(), vectors[faces],
                                                       confirmed=np.full(len(faces), cut is not None))
        fitted = matched(fitted, more, whose, size)[0]
        read = clustered(fitted, more, whose) if cut is None else truncated(fitted, more, whose, cut)
        return read[0].threshold_for(target)

    thresholds = {"gallery_alone": first, "kept_faces": again(kept),
                  "kept_all_cut": again(kept, first),
                  "kept_confirmed_cut": again(kept[~np.isin(kept, genuine)], first),
                  "all_strangers_ingested": again(np.asarray(strangers, int))}
    whose = np.asarray([i for i, name in enumerate(enrolled) for _ in photos[name][1:]])
    known = vectors[others] @ g.T
    right, known_best = known.argmax(axis=1) == whose, known.max(axis=1)
    return {"kept": len(kept), "kept_enrolled": int(np.isin(kept, genuine).sum()),
            **{rule: round(reached(t), 5) for rule, t in thresholds.items()},
            **{f"{rule}_identified": round(float(np.mean(right & (known_best >= t))), 4)
               for rule, t in thresholds.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 300])
    parser.add_argument("--draws", type=int, default=10)
    parser.add_argument("--fpir", type=float, default=0.01)
    parser.add_argument("--genuine-share", type=float, default=0.5, help="of the searches, the enrolled's photos")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    vectors, people = load()
    by_person = {name: np.flatnonzero(people == name) for name in np.unique(people)}
    result = {"fpir": args.fpir, "genuine_share": args.genuine_share, "sizes": {}}
    for size in args.sizes:
        rng = np.random.default_rng([args.seed, size])
        draws = [one_draw(vectors, people, by_person, size, args.fpir, args.genuine_share, rng)
                 for _ in range(args.draws)]
        row = {"kept": float(np.median([d["kept"] for d in draws])),
               "kept_enrolled": float(np.median([d["kept_enrolled"] for d in draws]))}
        for rule in RULES:
            reached = np.asarray([d[rule] for d in draws])
            row[rule] = {"median": round(float(np.median(reached)), 5),
                         "range": [round(float(reached.min()), 5), round(float(reached.max()), 5)],
                         "within_2x": int(((reached >= args.fpir / 2) & (reached <= 2 * args.fpir)).sum()),
                         "identified": round(float(np.median([d[f"{rule}_identified"] for d in draws])), 4)}
        result["sizes"][str(size)] = row
    emit(result, args.out)


if __name__ == "__main__":
    main()
