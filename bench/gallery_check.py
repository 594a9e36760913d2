"""How much of what is wrong with a gallery `arcmatch gallery check` finds (indexer/health.py), on LFW-gray, ORL or
the demo's synthetic faces.

Each draw: people with three or more photos, two photos each in the gallery (`--photos 1`: people with two or more,
one photo each); then 2% of the names get a twin (another photo of the same person under a name of its own: one
person, two names) and, with two photos each, 2% of the photos are moved to another identity (a mislabel; with one
photo each a moved photo is a wrong name, which no score can tell from a right one). Recall: planted twins listed
as a pair, moved photos listed as misfits. Precision of the pairs: listed pairs that are a planted twin or the two
identities a moved photo joins; and counting as right the pairs that are LFW's own duplicates too (one person under
two names in LFW itself: see lfw_same_person). A moved photo counts as found when it is listed at all: as a misfit
(with the person it shows) or as unlike the rest of its identity (a stray). `--outsiders`: that share of the names
also get a photo of someone never enrolled (a stranger's photo under a name), found when listed as a stray; strays
listed that nobody planted are counted too. `--merged`: that share of the names get another enrolled person's
photos too (a wrong merge: two people under one name), found when the name is listed as two people; names listed so
that nobody merged are counted too (`--photos 4`: one person's four photos, which should stay one group).

    .venv/bin/python bench/gallery_check.py [--sizes 300 1000] [--draws 5] [--photos 1|2|3] [--outsiders 0.02]
        [--merged 0.02] [--domain lfw|orl|synthetic] [--vectors NPZ (synthetic)] [--out FILE]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.calibrate_tail import load, load_orl  # noqa: E402
from bench.harness import emit, lfw_person  # noqa: E402
from indexer.health import check  # noqa: E402
from indexer.tail import identity_scores  # noqa: E402

FOUND = ("twins_found", "moved_found", "outsiders_found", "merged_found", "pair_precision")


def one_draw(vectors, people, size: int, share: float, rng, photos: int = 2, outsiders: float = 0.0,
             merged: float = 0.0) -> dict:
    by_person = {n: rng.permutation(np.flatnonzero(people == n)) for n in np.unique(people)}
    enough = [n for n, rows in by_person.items() if len(rows) > photos]
    enrolled = list(rng.choice(enough, size, replace=False))
    rows = [r for n in enrolled for r in by_person[n][:photos]]
    labels = [n for n in enrolled for _ in range(photos)]
    planted = max(1, int(round(share * size)))
    twins = set()
    for name in rng.choice(enrolled, planted, replace=False):
        rows.append(by_person[name][photos])
        labels.append(f"{name} (twin)")
        twins.add(tuple(sorted((name, f"{name} (twin)"))))
    merges: set[str] = set()
    if merged:
        untwinned = [n for n in enrolled if not any(n in pair for pair in twins)]
        chosen = rng.choice(untwinned, 2 * max(1, int(round(merged * size))), replace=False)
        for into, other in zip(chosen[::2], chosen[1::2], strict=True):
            labels = [into if label == other else label for label in labels]
            merges.add(str(into))
        enrolled = [n for n in enrolled if n not in set(chosen[1::2])]
    moved, joined = set(), set()
    for at in rng.choice(size * photos, planted if photos > 1 else 0, replace=False):
        others = [n for n in enrolled if n != labels[at]]
        target = others[int(rng.integers(len(others)))]
        joined.add(tuple(sorted((labels[at], target))))
        labels[at] = target
        moved.add(int(at))
    strangers = [n for n in by_person if n not in set(enrolled) and lfw_person(n) not in {lfw_person(e) for e in
                                                                                          enrolled}]
    outside = set()
    for name in rng.choice(strangers, int(round(outsiders * size)), replace=False):
        rows.append(by_person[name][0])
        labels.append(enrolled[int(rng.integers(len(enrolled)))])
        outside.add(len(rows) - 1)
    found = check(np.arange(len(rows)), vectors[rows], np.asarray(labels))
    pairs = {tuple(sorted((d.first, d.second))) for d in found.duplicates}
    lfw_own = {tuple(sorted((d.first, d.second))) for d in found.duplicates if lfw_same_person(d)} - twins - joined
    misfits = {m.face_id for m in found.misfits}
    strays = {s.face_id for s in found.strays}
    splits = {s.identity for s in found.splits}
    best_cut = oracle_cut(vectors[rows], np.asarray(labels), twins, joined)
    return {**best_cut, "twins_found": len(pairs & twins) / len(twins), "pair_precision": len(pairs & (twins | joined))
            / max(len(pairs), 1), "pair_precision_with_lfw_own": len(pairs & (twins | joined | lfw_own))
            / max(len(pairs), 1), "pairs_listed": len(pairs), "lfw_own_pairs": len(lfw_own),
            "moved_found": len((misfits | strays) & moved) / max(len(moved), 1),
            "moved_found_as_misfits": len(misfits & moved) / max(len(moved), 1), "misfits_listed": len(misfits),
            "outsiders_found": len(strays & outside) / max(len(outside), 1), "strays_listed": len(strays),
            "strays_unplanted": len(strays - moved - outside),
            "merged_found": len(splits & merges) / max(len(merges), 1), "splits_unplanted": len(splits - merges)}


def oracle_cut(vectors: np.ndarray, labels: np.ndarray, twins: set, joined: set, precision: float = 0.8) -> dict:
    """What one cutoff on the identity pairs' best cross score can do, chosen knowing the answers: the lowest cutoff
    whose listed pairs are still `precision` planted, and the twins and moved photos' pairs it lists. A bound for
    any rule that ranks pairs by their score alone; the check also weighs which photos back a pair."""
    scores, names, own = identity_scores(vectors, labels)  # each photo's best score with each other identity
    pair = np.full((len(names), len(names)), -np.inf, np.float32)
    np.fmax.at(pair, own, scores)  # each identity pair's best photo pair
    first, second = np.triu_indices(len(names), k=1)
    ranked = np.argsort(pair[first, second])[::-1]
    key = [tuple(sorted((str(names[a]), str(names[b])))) for a, b in zip(first[ranked], second[ranked], strict=True)]
    hits = np.cumsum([k in twins or k in joined for k in key])
    fine = np.flatnonzero(hits / np.arange(1, len(key) + 1) >= precision)
    listed = set(key[: fine[-1] + 1]) if len(fine) else set()
    return {"oracle_twins_found": len(listed & twins) / len(twins),
            "oracle_moved_found": len(listed & joined) / max(len(joined), 1)}


def lfw_same_person(pair) -> bool:
    """A listed pair nobody planted that is one person all the same: LFW's own duplicates (near-identical images,
    cosine above 0.9, or one name written two ways, Choi_Sung-hong and Sung_Hong_Choi)."""
    return pair.score > 0.9 or lfw_person(pair.first) == lfw_person(pair.second)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[300, 1000])
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--share", type=float, default=0.02)
    parser.add_argument("--photos", type=int, choices=(1, 2, 3, 4), default=2, help="photos per person in the gallery")
    parser.add_argument("--outsiders", type=float, default=0.0, help="share of names given a stranger's photo too")
    parser.add_argument("--merged", type=float, default=0.0, help="share of names given another's photos too")
    parser.add_argument("--domain", choices=("lfw", "orl", "synthetic"), default="lfw")
    parser.add_argument("--vectors", type=Path, help="--domain synthetic: the .npz bench/calibrate_tail.py kept")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.domain == "synthetic":
        if args.vectors is None:
            parser.error("--domain synthetic needs --vectors (the .npz a bench/calibrate_tail.py run kept)")
        kept = np.load(args.vectors)
        vectors, people = kept["vectors"], kept["labels"].astype(str)
    else:
        vectors, people = {"lfw": load, "orl": load_orl}[args.domain]()
    result = {"domain": args.domain, "photos": args.photos, "share": args.share, "outsiders": args.outsiders,
              "merged": args.merged, "draws": args.draws, "rows": []}
    for size in args.sizes:
        draws = [one_draw(vectors, people, size, args.share, np.random.default_rng(seed), args.photos, args.outsiders,
                          args.merged) for seed in range(args.draws)]
        row = {"size": size, **{k: round(float(np.median([d[k] for d in draws])), 3) for k in draws[0]},
               # a median of 100% can hide a bad draw: the mean and the worst draw of what is found
               **{f"{k}_{how}": round(float(f([d[k] for d in draws])), 3) for k in FOUND
                  for how, f in (("mean", np.mean), ("worst", np.min))},
               "strays_unplanted_mean": round(float(np.mean([d["strays_unplanted"] for d in draws])), 2),
               "splits_unplanted_mean": round(float(np.mean([d["splits_unplanted"] for d in draws])), 2)}
        result["rows"].append(row)
        print(row, file=sys.stderr)
    emit(result, args.out)


if __name__ == "__main__":
    main()
