"""`arcmatch calibrate`: the gallery's own threshold for a target false-positive identification rate, chosen from
the vectors in the store (no images; a model named only lends the tail reference its evaluation kept), because a
model's threshold is the right one only for galleries like those it was calibrated on. The result is kept with the
collection the gallery serves (a collection property), so every process searching it (the API's replicas, the
CLI's search) uses it within seconds, and a re-embed's new collection starts from its own model's calibration
again; `--show` reads it back, `--clear` forgets it.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from common.errors import EXIT_OK, BadInput, NotFound
from jobs.cli.options import (
    PICTURES,
    audit,
    model_flag,
    open_gallery,
    positive,
    settings_from,
    share,
    store_flags,
    writable,
)

SAMPLE = 5000  # faces drawn as trials
CALIBRATION_ONLY = {"fpir": "--fpir", "sample": "--sample", "method": "--method", "dry_run": "--dry-run"}


def register(sub) -> None:
    p = sub.add_parser("calibrate", help="choose the gallery's threshold for a target false-positive "
                                         "identification rate, from its own faces")
    store_flags(p)
    p.add_argument("--fpir", type=share,
                   help="target share of unknown people answered as someone (default: the gallery's, as its last "
                        "calibration or `galleries create --fpir` set it; else 0.01)")
    p.add_argument("--sample", type=positive, help=f"faces drawn as trials (default {SAMPLE})")
    p.add_argument("--method", choices=["tail", "top1"],
                   help="tail: every cross-identity score with a model of the tail, duplicates set aside and named, "
                        "unlabelled faces as more strangers, an FPIR interval; top1: the quantile of each trial's "
                        "best non-mated score, which one duplicate enrollment decides (default tail)")
    model_flag(p, "the gallery's model: where the gallery's record lacks the tail reference its `eval --calibrate` "
                  "kept since, the calibration takes it")
    p.add_argument("--target", help="a collection of the gallery other than the one in service (a re-embed's, "
                                    "before its switch)")
    p.add_argument("--dry-run", action="store_true", help="report the threshold, keep nothing")
    p.add_argument("--show", action="store_true", help="print the calibration in use, change nothing")
    p.add_argument("--clear", action="store_true", help="forget the gallery's calibration: the model's applies")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--plot", type=writable(*PICTURES), metavar="FILE",
                   help="save the FNIR-vs-FPIR curve as a picture (.png, .svg or .pdf)")
    p.set_defaults(run=calibrate)


def take_reference(index, model) -> None:
    """The model's tail reference (indexer/reference.py) into the collection's record where the record lacks it:
    a model evaluated (`eval --calibrate`) after the gallery was made. Only the collection's own model lends it;
    another model's says nothing of these vectors."""
    from dataclasses import replace

    from embedder.embed import open_embedder

    embedder, info = open_embedder(model), index.info()
    if embedder.calibration is not None and embedder.spec.version == info.model_version:
        # ensure() writes it where the record has none, as when the model opens the gallery (ingest, the API)
        index.ensure(replace(info, reference=embedder.calibration.tail_reference))


def calibrate(args: argparse.Namespace) -> int:
    from indexer import calibration
    from indexer.store import FaceIndex
    from jobs.calibration_plot import plot
    from jobs.calibration_watch import count_identities

    if args.show and args.clear:
        raise BadInput("--show and --clear do not go together")
    unused = [flag for field, flag in CALIBRATION_ONLY.items() if getattr(args, field) not in (None, False)]
    if (args.show or args.clear) and unused:  # a flag that does nothing must not look as if it did something
        raise BadInput(f"{' and '.join(unused)} {'is' if len(unused) == 1 else 'are'} for a calibration run, not "
                       f"--{'show' if args.show else 'clear'}: drop {'it' if len(unused) == 1 else 'them'}, or "
                       "calibrate again with them")
    settings = settings_from(args)
    galleries = open_gallery(settings)
    name = args.target or galleries.serving()
    if name is None:
        raise NotFound(f"gallery {settings.gallery!r} does not exist; ingest or enroll faces first")
    if args.target and args.target not in {c.name for c in galleries.collections()}:
        raise NotFound(f"{args.target!r} is not a collection of gallery {settings.gallery!r} "
                       f"(see `arcmatch collections list`)")
    index = FaceIndex(galleries.client, name)
    titled = f"gallery {settings.gallery}" + (f" ({name})" if args.target else "")  # its name, not its collection's
    if settings.model is not None and not (args.show or args.clear):
        take_reference(index, settings.model)
    if args.show:
        found = calibration.stored(index)
        if found is not None and args.plot:
            plot(found, args.plot, f"{titled}: FPIR target {found.target_fpir}")
        if args.json:
            print(json.dumps({**asdict(found), "status": found.status(count_identities(index))} if found else None))
        elif found is not None:
            print("\n".join([f"{name}:", *found.lines(), *found.growth_lines(count_identities(index))]))
        else:
            print(f"{name}: no gallery calibration; {_fallback(index)}")
        return EXIT_OK
    if args.clear:
        calibration.store(index, None)
        audit(settings, "calibration_clear", collection=name)
        print(f"{name}: gallery calibration cleared; {_fallback(index)}")
        return EXIT_OK
    if args.fpir is None:
        args.fpir = calibration.target_fpir(index)
    result = calibration.calibrate(index, args.fpir, model_threshold=index.info().threshold,
                                   sample=args.sample or SAMPLE, method=args.method or "tail")
    if not args.dry_run:
        calibration.store(index, result)
        audit(settings, "calibrate", collection=name, threshold=result.threshold, target_fpir=args.fpir)
    if args.plot:
        plot(result, args.plot, f"{titled}: FPIR target {args.fpir}")
    if args.json:
        print(json.dumps(asdict(result)))
    else:
        print("\n".join([f"{name}:", *result.lines(),
                         "(dry run: nothing kept)" if args.dry_run else "kept with the collection: searches use it"]))
    return EXIT_OK


def _fallback(index) -> str:
    """What a search of the gallery takes without its calibration: the model's threshold, or none at all."""
    threshold = index.info().threshold
    if threshold is None:
        return ("its model was never calibrated either: a search needs a threshold (--threshold) until "
                "`arcmatch calibrate` makes one")
    return f"the model's threshold {threshold:.4f} applies"
