"""Which gallery calibration keeps its promise: the leave-one-identity-out top-1 rule against the tail model
(indexer/tail.py), with and without strangers as extra evidence, on galleries of one photo per person, clean and
with planted duplicates; and whether the tail model's 95% interval holds the FPIR really reached.

For each domain, gallery size and draw: enrolled people are drawn from those with two or more photos (one photo each
in the gallery; their other photos are the known probes); with `--duplicates`, that share of the gallery's names are
a second photo of an enrolled person under a name of its own. Of the people never enrolled, one photo each of up to
`--strangers` of them are the strangers (faces known to be nobody enrolled, for the "tail + strangers" rule); up to
10 photos of each of the rest are the unknown probes, which say which FPIR a threshold really reaches (each person
weighted once: the share of people a threshold answers as someone, with more than one trial per person where there
are more photos, which 0.1% needs; also among those with two or more photos only, the population the enrolled are
drawn from). On LFW-gray a never-enrolled name that is an enrolled person under another name (bench/harness.py,
lfw_person) is neither a stranger nor an unknown probe. Each rule chooses the threshold for the target FPIR from the
gallery's vectors alone; the known probes say how many are identified there, against the best possible at that same
FPIR (the highest threshold that accepts as large a share of the unknown). "oracle" is one fixed threshold for all
draws of a row, the one whose median reached FPIR is the target: the spread it still has is what the draw of people
adds, which no estimate from the gallery can take away.

    .venv/bin/python bench/calibrate_tail.py [--domain lfw|orl|synthetic] [--sizes 100 300 1000] [--draws 10]
        [--fpir 0.01] [--strangers 500] [--confirmed | --staff 0.05] [--model DIR | --vectors NPZ (synthetic)]
        [--reference PEOPLE [--reference-from lfw]] [--out FILE]

`--reference`: also "tail_reference", the tail model with a model's reference tail (indexer/reference.py, what
`arcmatch eval --calibrate` keeps and `calibrate` then uses below 300 people), measured on that many more
never-enrolled people (held out of the unknown probes), or with `--reference-from lfw` on LFW-gray people (a
reference from another kind of photo than the gallery's, as a model evaluated on LFW meets a studio's gallery).

`--confirmed`: the strangers are confirmed strangers (`ingest --strangers`): none dropped, and from MIN_DIRECT of
them the rate at the gallery's size read off them (tail.directly). `--staff`: that share of the strangers are
instead another photo of an enrolled person each (an event's photos with the staff in them), taken out of the
known probes: how well the strangers that look enrolled are dropped.

Vectors: LFW-gray and ORL through the shared MobileFaceNet (ORL behind the crop box of bench/calibrate_domains.py),
embedded once and cached (bench/harness.py); synthetic faces: fresh identities (trainer/synthetic.py, indices
40,000 on, never in a demo's training) through a trained demo model, `--model DIR`, or the vectors a run
with one kept (`--vectors` the .npz it wrote in the cache, named after the model's hash).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import CACHE, SHARED, embed_cached, emit, lfw_person, onnx_model_dir  # noqa: E402
from indexer.calibration import MISFIT, Trials  # noqa: E402
from indexer.gallery_tail import matched  # noqa: E402
from indexer.reference import Stricter, TailReference  # noqa: E402
from indexer.strangers import fit_with_strangers  # noqa: E402
from indexer.tail import clustered, directly, fit_gallery, identity_scores, resampled  # noqa: E402

LFW = SHARED / "data" / "lfw_gray"
ORL = SHARED / "data" / "orl_att_faces"
ORL_CROP = (0.0, 0.1, 1.0, 0.92)  # as bench/calibrate_domains.py
SYNTHETIC_FIRST, SYNTHETIC_PEOPLE, SYNTHETIC_PHOTOS = 40_000, 1200, 4
RULES = ("top1", "tail", "tail_reference", "tail_strangers", "oracle")
MAX_PHOTOS = 10  # unknown probes per never-enrolled person (LFW has 530 of one man; each person counts once)


def load() -> tuple[np.ndarray, np.ndarray]:
    paths = sorted(LFW.glob("*/*.jpg"))
    vectors = embed_cached(onnx_model_dir(Path(tempfile.mkdtemp()), "mobilefacenet.spec.json"), paths,
                           CACHE / "lfw_gray_mobilefacenet.npz")
    return np.stack([vectors[str(p)] for p in paths]), np.array([p.parent.name for p in paths])


def load_orl() -> tuple[np.ndarray, np.ndarray]:
    model = onnx_model_dir(Path(tempfile.mkdtemp()), "mobilefacenet.spec.json", name="mobilefacenet-orl")
    spec = json.loads((model / "spec.json").read_text())
    (model / "spec.json").write_text(json.dumps({**spec, "crop_box": list(ORL_CROP)}))
    paths = sorted(ORL.glob("s*/*.pgm"))
    vectors = embed_cached(model, paths, CACHE / "orl_mobilefacenet.npz")
    return np.stack([vectors[str(p)] for p in paths]), np.array([p.parent.name for p in paths])


def load_synthetic(model: Path) -> tuple[np.ndarray, np.ndarray]:
    """Fresh synthetic identities through a trained demo model, drawn and embedded once."""
    from embedder.embed import open_embedder
    from embedder.sources import decode_items, list_images
    from trainer.synthetic import write_dataset

    root = CACHE / f"tail-synthetic-{SYNTHETIC_PEOPLE}"
    if not (root / "complete").exists():
        write_dataset(root, range(SYNTHETIC_FIRST, SYNTHETIC_FIRST + SYNTHETIC_PEOPLE), SYNTHETIC_PHOTOS, seed=0)
        (root / "complete").touch()
    key = hashlib.sha256((model / "model.pt").read_bytes()).hexdigest()[:16]
    cache = root.with_name(f"{root.name}-{key}.npz")
    if not cache.exists():
        embedder = open_embedder(model)
        data = decode_items(list_images(root), embedder.spec)
        np.savez(cache, vectors=embedder.embed(data.images), labels=np.asarray(data.labels))
    data = np.load(cache)
    return data["vectors"], data["labels"].astype(str)


def never_enrolled(by_person: dict, enrolled, strangers: int, rng, reference: int = 0
                   ) -> tuple[list, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(one photo each of up to `strangers` people never enrolled, the unknown probes: up to MAX_PHOTOS photos of
    each of the others, their weights (each person once), whether each is of a person with one photo, and every
    photo of `reference` more people after the strangers, neither strangers nor unknown: a model's held-out
    identities). Never enrolled excludes an enrolled person under another LFW name (harness.lfw_person)."""
    known_people = {lfw_person(n) for n in enrolled}
    others = rng.permutation([n for n in by_person if n not in set(enrolled) and lfw_person(n) not in known_people])
    stranger_rows = [rng.choice(by_person[n]) for n in others[:strangers]]
    held = [r for n in others[strangers:strangers + reference] for r in by_person[n]]
    rest = others[strangers + reference:]
    unknown = np.concatenate([by_person[n][:MAX_PHOTOS] for n in rest])
    weight = np.concatenate([np.full(min(len(by_person[n]), MAX_PHOTOS), 1 / min(len(by_person[n]), MAX_PHOTOS))
                             for n in rest])
    weight /= weight.sum()  # each never-enrolled person counts once, however many photos LFW has of them
    # the enrolled are drawn from people with two or more photos; LFW's people with one are another population
    single = np.concatenate([np.full(min(len(by_person[n]), MAX_PHOTOS), len(by_person[n]) == 1) for n in rest])
    return stranger_rows, unknown, weight, single, np.asarray(held, np.int64)


def one_draw(vectors, people, size: int, duplicates: float, target: float, strangers: int, rounds: int,
             rng, staff: float = 0.0, confirmed: bool = False, reference: int = 0, elsewhere=None) -> dict:
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
    # a model's held-out identities: other people of this domain, held out of the unknown, or of another domain
    held = reference if elsewhere is None else 0
    stranger_rows, unknown, weight, single, rows = never_enrolled(by_person, enrolled, strangers, rng, held)
    if reference:
        measured = TailReference.measure(*((vectors[rows], people[rows]) if held else elsewhere),
                                         seed=int(rng.integers(1 << 30)))
    planted_staff = int(round(staff * len(stranger_rows)))
    if planted_staff:  # the last of the "strangers" are enrolled people's photos, no longer known probes
        photo = {name: known[known_labels.index(name)] for name in rng.choice(enrolled, planted_staff, replace=False)}
        stranger_rows = list(stranger_rows[:len(stranger_rows) - planted_staff]) + list(photo.values())
        kept = [i for i, r in enumerate(known) if r not in set(photo.values())]
        known, known_labels = [known[i] for i in kept], [known_labels[i] for i in kept]
    gallery, labels = np.asarray(gallery), np.asarray(labels)
    g = vectors[gallery]

    scores, _, _ = identity_scores(g, labels)
    thresholds = {"top1": Trials(np.nanmax(scores, axis=1), np.zeros(0, bool),
                                 np.zeros(0, np.float32)).threshold_for(target)}
    model, evidence, _, own = fit_gallery(g, labels)
    # as `calibrate`: checked against the gallery's own trials, refitted where it does not fit
    model, check = matched(model, evidence, own, len(set(labels)))
    thresholds["tail"] = model.threshold_for(target)
    if reference:  # as `calibrate` with the model's reference (eval --calibrate) and no strangers
        thresholds["tail_reference"] = Stricter(model, measured).threshold_for(target)
    if stranger_rows:
        # as `calibrate`: strangers that look enrolled dropped, their own best scores read (tail.clustered)
        flags = np.full(len(stranger_rows), confirmed)
        with_strangers, more, _, whose, _ = fit_with_strangers(g, labels, np.arange(len(g)), frozenset(),
                                                               vectors[stranger_rows], confirmed=flags)
        fitted = clustered(matched(with_strangers, more, whose, len(set(labels)))[0], more, whose)[0]
        fitted = directly(fitted, more, whose, flags)[0]  # from MIN_DIRECT confirmed on, as `calibrate` does
        thresholds["tail_strangers"] = fitted.threshold_for(target)
        strangers_modelled = [m.fpir(thresholds["tail_strangers"]) for m in
                              resampled(more, whose, rounds, power=fitted.spread_power, reading=fitted)]
    modelled = [m.fpir(thresholds["tail"]) for m in resampled(evidence, own, rounds, power=model.spread_power)]
    misfit = check["modelled"] / check["observed"] if check else None
    refitted = bool(check and "modelled_before" in check)

    stranger_best = (vectors[unknown] @ g.T).max(axis=1)
    probe_scores = vectors[known] @ g.T
    right = labels[probe_scores.argmax(axis=1)] == np.asarray(known_labels)
    best = probe_scores.max(axis=1)
    order = np.argsort(stranger_best)[::-1]
    accepted_share = np.cumsum(weight[order])

    def judged(threshold: float) -> dict:
        reached = float(weight[stranger_best >= threshold].sum())
        # the best threshold at that FPIR: the highest that accepts as large a share of the unknown probes
        at = int(np.searchsorted(accepted_share, reached - 1e-12))
        ideal = stranger_best[order[at]] if reached > 0 else stranger_best[order[0]] + 1e-6
        crossed = stranger_best >= threshold
        like_enrolled = float(weight[crossed & ~single].sum() / max(weight[~single].sum(), 1e-12))
        return {"threshold": round(threshold, 4), "fpir": round(reached, 5),
                "fpir_people_with_several_photos": round(like_enrolled, 5),
                "identified": round(float((right & (best >= threshold)).mean()), 4),
                "best_identified_at_that_fpir": round(float((right & (best >= ideal)).mean()), 4)}

    reached = float(weight[stranger_best >= thresholds["tail"]].sum())
    low, high = np.percentile(modelled, [2.5, 97.5])

    def covers(values: list[float], threshold: float, point: float) -> bool:
        """Whether the interval `calibrate` prints (the resampled models' 95%, stretched to hold the point) holds
        the FPIR reached."""
        low, high = np.percentile(values, [2.5, 97.5])
        return bool(min(low, point) <= float(weight[stranger_best >= threshold].sum()) <= max(high, point))

    return {**{rule: judged(t) for rule, t in thresholds.items()}, "suspects": len(model.suspects),
            "planted": planted, "unknown_probes": len(unknown), "interval": [float(low), float(high)],
            "misfit": misfit, "refitted": refitted,
            "covered": bool(low <= reached <= high), "judge": judged, "stranger_best": stranger_best,
            "strangers_covered": covers(strangers_modelled, thresholds["tail_strangers"], target)
                                  if stranger_rows else None,
            "weight": weight}


def summary(draws: list[dict], rule: str, target: float) -> dict:
    reached = np.array([d[rule]["fpir"] for d in draws])
    gap = np.array([d[rule]["best_identified_at_that_fpir"] - d[rule]["identified"] for d in draws])
    return {"fpir_median": round(float(np.median(reached)), 5),
            "fpir_range": [round(float(reached.min()), 5), round(float(reached.max()), 5)],
            "within_factor_2": int(((reached >= target / 2) & (reached <= target * 2)).sum()),
            "fpir_people_with_several_photos_median": round(float(np.median(
                [d[rule]["fpir_people_with_several_photos"] for d in draws])), 5),
            "identified_median": round(float(np.median([d[rule]["identified"] for d in draws])), 4),
            "gap_to_best_median": round(float(np.median(gap)), 4), "gap_to_best_max": round(float(gap.max()), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--domain", choices=("lfw", "orl", "synthetic"), default="lfw")
    parser.add_argument("--model", type=Path, help="a trained demo model directory (--domain synthetic)")
    parser.add_argument("--vectors", type=Path, help="--domain synthetic: vectors and labels already embedded")
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 300, 1000])
    parser.add_argument("--draws", type=int, default=10)
    parser.add_argument("--fpir", type=float, default=0.01)
    parser.add_argument("--duplicates", type=float, nargs="+", default=[0.0, 0.02])
    parser.add_argument("--strangers", type=int, default=500, help="never-enrolled faces given as strangers")
    parser.add_argument("--staff", type=float, default=0.0,
                        help="share of the strangers that are enrolled people's other photos (an event's staff)")
    parser.add_argument("--confirmed", action="store_true",
                        help="the strangers are confirmed (`ingest --strangers`): never dropped, read directly")
    parser.add_argument("--reference", type=int, default=0, metavar="PEOPLE",
                        help="also the tail with a model's reference (indexer/reference.py) measured on this many "
                             "never-enrolled people, held out of the unknown probes")
    parser.add_argument("--reference-from", choices=("lfw",),
                        help="measure the reference on LFW-gray people instead (a model's held-out set of another "
                             "kind of photo than the gallery's)")
    parser.add_argument("--rounds", type=int, default=50, help="resampled models behind each interval")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.domain == "synthetic" and args.model is None and args.vectors is None:
        parser.error("--domain synthetic needs --model (a trained demo model directory) or --vectors")
    if args.vectors is not None:
        kept = np.load(args.vectors)
        vectors, people = kept["vectors"], kept["labels"].astype(str)
    else:
        vectors, people = {"lfw": load, "orl": load_orl}.get(args.domain, lambda: load_synthetic(args.model))()
    elsewhere = None
    if args.reference and args.reference_from:
        ref_vectors, ref_people = load()
        elsewhere = (ref_vectors, ref_people)
    result = {"domain": args.domain, "reference": args.reference, "reference_from": args.reference_from,
              "target_fpir": args.fpir, "draws": args.draws, "strangers": args.strangers,
              "staff": args.staff, "confirmed": args.confirmed, "rows": []}
    for size in args.sizes:
        for share in args.duplicates:
            draws = [one_draw(vectors, people, size, share, args.fpir, args.strangers, args.rounds,
                              np.random.default_rng(seed), args.staff, args.confirmed, args.reference, elsewhere)
                     for seed in range(args.draws)]
            # the oracle: one threshold for every draw, the one whose median reached FPIR is the target
            grid = np.linspace(-0.2, 1.0, 2401)
            curves = np.array([[d["weight"][d["stranger_best"] >= t].sum() for t in grid] for d in draws])
            oracle = float(grid[np.argmin(np.abs(np.median(curves, axis=0) - args.fpir))])
            for d in draws:
                d["oracle"] = d["judge"](oracle)
            row = {"size": size, "duplicates": share, "planted": draws[0]["planted"],
                   "unknown_probes_median": int(np.median([d["unknown_probes"] for d in draws]))}
            row.update({rule: summary(draws, rule, args.fpir) for rule in RULES if rule in draws[0]})
            row["tail_interval_covers"] = int(sum(d["covered"] for d in draws))
            if draws[0]["strangers_covered"] is not None:
                row["tail_strangers_interval_covers"] = int(sum(d["strangers_covered"] for d in draws))
            row["tail_interval_median"] = [round(float(np.median([d["interval"][i] for d in draws])), 5)
                                           for i in (0, 1)]
            row["suspects_median"] = float(np.median([d["suspects"] for d in draws]))
            ratios = [d["misfit"] for d in draws if d["misfit"] is not None]
            row["tail_check"] = {"refitted": sum(d["refitted"] for d in draws),
                                 "said_not_to_fit": sum(not 1 / MISFIT <= r <= MISFIT for r in ratios),
                                 "checked": len(ratios), "modelled_over_observed_median":
                                 round(float(np.median(ratios)), 2) if ratios else None}
            result["rows"].append(row)
            print(row, file=sys.stderr)
    emit(result, args.out)


if __name__ == "__main__":
    main()
