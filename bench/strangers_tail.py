"""How far a gallery's unlabelled faces (strangers) can carry a calibration, read four ways, on LFW-gray.

Why: at FPIR 0.1% on 1,000 people the tail model, with the strangers' factor read where 10 of them cross and
carried beyond, lets 0.30% through whether it is given 500 strangers or 2,000 (bench/calibrate_tail.py). This
measures where that comes from, on the same draws as calibrate_tail.py (its `one_draw` people and strangers):

- "calibrate": what `arcmatch calibrate` does (fit_with_strangers, matched, clustered): a stranger that looks
  like someone enrolled in the tail of the gallery's own faces is dropped;
- "judged with them": the rule before, the same with the strangers judged by the tail fitted with them (found,
  dropped and fitted again, three rounds);
- "calibrate, none dropped": the same with no stranger dropped for looking like someone enrolled;
- "falling beyond": none dropped, and beyond the anchor the strangers' crossing falls as a GPD fitted to their
  STRANGERS_TAIL highest best scores instead of keeping the anchor's factor;
- "direct": the strangers' best scores alone, a GPD on the DIRECT_TAIL highest (no gallery model at all), from all
  strangers and from those `calibrate` keeps.

    .venv/bin/python bench/strangers_tail.py [--sizes 1000] [--strangers 2000] [--fpir 0.001] [--draws 10]
        [--enrolled-share 0.05] [--vectors NPZ]

`--enrolled-share`: that share of the strangers are other photos of enrolled people instead (the staff in an
event's photos, each a different enrolled person), to measure how each rule keeps them out; the FPIR reached is
still on the never-enrolled.

`--vectors`: other faces than LFW-gray's, the vectors and labels a bench/calibrate_tail.py run kept (its synthetic
faces through a demo model, in /tmp/arcmatch-bench-cache).
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
from indexer.tail import (  # noqa: E402
    DIRECT_TAIL,  # "direct": the strangers' highest best scores its GPD is fitted to, as tail.directly's
    DUPLICATE_ALPHA,
    clustered,
    fit_gallery,
    fit_scores,
    gpd_survival,
    lowest_threshold,
    top_gpd,
)

STRANGERS_TAIL = 30  # "falling beyond": the strangers' highest best scores its GPD is fitted to
READINGS = ("calibrate", "judged_with_them", "calibrate_none_dropped", "falling_beyond", "direct_all", "direct_kept")


def gpd(best: np.ndarray, top: int) -> tuple[float, float, float, float]:
    """(u, k, alpha, share above u) of a GPD on the `top` highest of `best`."""
    return (*top_gpd(np.sort(best), top), top / len(best))


def survival(t: float, u: float, k: float, alpha: float) -> float:
    """The GPD's survival at threshold `t` (1 at or below u), as a share of the scores above u."""
    return float(gpd_survival(max(float(t) - u, 0.0), k, alpha))


def judged_with_them(g, labels, strangers, rounds: int = 3):
    """The rule before: fit_with_strangers' drop judged by the tail fitted with the strangers in it, found,
    dropped and fitted again up to `rounds` times; (model, evidence, names, own, which strangers were dropped)."""
    model, evidence, names, own = fit_gallery(g, labels, np.arange(len(g)), strangers=strangers)
    for _ in range(rounds):
        rows = np.flatnonzero(own < 0)
        z = (evidence[rows] - model.location[rows, None]) / model.spread[rows, None]
        alike = rows[len(rows) * evidence.shape[1] * model.survival(np.nanmax(z, axis=1)) < DUPLICATE_ALPHA]
        if not len(alike):
            break
        keep = ~np.isin(np.arange(len(own)), alike)
        model, evidence, names, own = fit_scores(evidence[keep], names, own[keep])
    dropped = np.ones(len(strangers), bool)
    dropped[-1 - own[own < 0]] = False  # a stranger's row carries -1 - its index (identity_scores)
    return model, evidence, names, own, dropped


def one_draw(vectors, people, size: int, strangers: int, target: float, share: float, rng) -> dict:
    by_person = {name: np.flatnonzero(people == name) for name in np.unique(people)}
    several = [n for n, rows in by_person.items() if len(rows) >= 2]
    enrolled = rng.choice(several, size, replace=False)
    photos = {name: rng.permutation(by_person[name]) for name in enrolled}
    gallery = [photos[name][0] for name in enrolled]
    stranger_rows, unknown, weight, _, _ = never_enrolled(by_person, enrolled, strangers, rng)
    staff = int(round(share * len(stranger_rows)))  # the last `staff` "strangers" are enrolled people's photos
    if staff:
        stranger_rows = list(stranger_rows[:len(stranger_rows) - staff]) + [
            photos[name][1] for name in rng.choice(enrolled, staff, replace=False)]
    g, labels = vectors[gallery], np.asarray(enrolled)
    reached_best = (vectors[unknown] @ g.T).max(axis=1)

    def reached(threshold: float) -> float:
        return float(weight[reached_best >= threshold].sum())

    fitted, dropped = {}, {}
    for name, drop in (("calibrate", True), ("calibrate_none_dropped", False)):
        model, more, _, whose, gone = fit_with_strangers(g, labels, np.arange(len(g)), frozenset(),
                                                         vectors[stranger_rows], drop=drop)
        fitted[name] = clustered(matched(model, more, whose, len(labels))[0], more, whose)[0]
        dropped[name] = gone
    model, more, _, whose, dropped["judged_with_them"] = judged_with_them(g, labels, vectors[stranger_rows])
    fitted["judged_with_them"] = clustered(matched(model, more, whose, len(labels))[0], more, whose)[0]
    thresholds = {name: model.threshold_for(target) for name, model in fitted.items()}

    model = fitted["calibrate_none_dropped"]
    u, k, alpha, _ = gpd(model.stranger_best, STRANGERS_TAIL)

    def falling(t: float) -> float:
        """The model's rate, beyond the anchor with what crosses there falling as the strangers' GPD, not as the
        model's sum over their rows (which the factor kept at the anchor assumes)."""
        if t <= model.anchor:
            return model.fpir(t)
        rows = model.strangers
        return (model.fpir(t) * model.summed(model.anchor, rows) / max(model.summed(t, rows), 1e-300)
                * survival(t, u, k, alpha) / survival(model.anchor, u, k, alpha))

    thresholds["falling_beyond"] = lowest_threshold(falling, target)
    all_best = (vectors[stranger_rows] @ g.T).max(axis=1)
    kept_best = fitted["calibrate"].stranger_best
    for name, best in (("direct_all", all_best), ("direct_kept", kept_best)):
        u, k, alpha, above = gpd(best, DIRECT_TAIL)
        thresholds[name] = lowest_threshold(lambda t, u=u, k=k, a=alpha, s=above: s * survival(t, u, k, a), target)
    planted = np.arange(len(stranger_rows)) >= len(stranger_rows) - staff
    return {**{f"dropped_{rule}": int(dropped[rule].sum()) for rule in ("calibrate", "judged_with_them")},
            **{f"planted_dropped_{rule}": int(dropped[rule][planted].sum()) for rule in ("calibrate",
                                                                                         "judged_with_them")},
            **{name: round(reached(t), 5) for name, t in thresholds.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000])
    parser.add_argument("--strangers", type=int, default=2000)
    parser.add_argument("--fpir", type=float, default=0.001)
    parser.add_argument("--draws", type=int, default=10)
    parser.add_argument("--enrolled-share", type=float, default=0.0,
                        help="share of the strangers that are enrolled people's other photos")
    parser.add_argument("--vectors", type=Path, help="vectors and labels kept by bench/calibrate_tail.py")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.vectors is not None:
        kept = np.load(args.vectors)
        vectors, people = kept["vectors"], kept["labels"].astype(str)
    else:
        vectors, people = load()
    result = {"strangers": args.strangers, "target_fpir": args.fpir, "draws": args.draws,
              "enrolled_share": args.enrolled_share, "rows": []}
    for size in args.sizes:
        draws = [one_draw(vectors, people, size, args.strangers, args.fpir, args.enrolled_share,
                           np.random.default_rng(seed))
                 for seed in range(args.draws)]
        row = {"size": size, **{f"{key}_median": float(np.median([d[key] for d in draws]))
                                for key in draws[0] if key.startswith(("dropped_", "planted_dropped_"))}}
        for name in READINGS:
            reached = np.array([d[name] for d in draws])
            row[name] = {"fpir_median": round(float(np.median(reached)), 5),
                         "fpir_range": [round(float(reached.min()), 5), round(float(reached.max()), 5)],
                         "within_factor_2": int(((reached >= args.fpir / 2) & (reached <= args.fpir * 2)).sum())}
        result["rows"].append(row)
        print(row, file=sys.stderr)
    emit(result, args.out)


if __name__ == "__main__":
    main()
