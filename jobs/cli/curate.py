"""`arcmatch calibrate`: the gallery's own threshold, chosen on its stored faces for a target FPIR.

    arcmatch calibrate --fpir 0.01 [--collection faces] [--sample 5000] [--dry-run]
    arcmatch calibrate --show | --clear

The result is kept with the collection the gallery serves (a collection property), so every process searching it
(the API's replicas, the CLI's search) uses it within seconds, and a re-embed's new collection starts from its own
model's calibration again. Needs no model and no images: only the vectors in the store.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from common.errors import EXIT_OK, BadInput, NotFound
from jobs.cli.options import audit, open_gallery, settings_from, store_flags


def register(sub) -> None:
    p = sub.add_parser("calibrate", help="choose the gallery's threshold for a target false-positive "
                                         "identification rate, from its own faces")
    store_flags(p)
    p.add_argument("--fpir", type=float, default=0.01,
                   help="target share of unknown people answered as someone (default %(default)s)")
    p.add_argument("--sample", type=int, default=5000, help="faces drawn as trials (default %(default)s)")
    p.add_argument("--target", help="a collection of the gallery other than the one in service (a re-embed's, "
                                    "before its switch)")
    p.add_argument("--dry-run", action="store_true", help="report the threshold, keep nothing")
    p.add_argument("--show", action="store_true", help="print the calibration in use, change nothing")
    p.add_argument("--clear", action="store_true", help="forget the gallery's calibration: the model's applies")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(run=calibrate)


def calibrate(args: argparse.Namespace) -> int:
    from indexer import calibration
    from indexer.store import FaceIndex

    if args.show and args.clear:
        raise BadInput("--show and --clear do not go together")
    settings = settings_from(args)
    galleries = open_gallery(settings)
    name = args.target or galleries.serving()
    if name is None:
        raise NotFound(f"gallery {settings.collection!r} does not exist; ingest or enroll faces first")
    if args.target and args.target not in {c.name for c in galleries.collections()}:
        raise NotFound(f"{args.target!r} is not a collection of gallery {settings.collection!r} "
                       f"(see `arcmatch collections list`)")
    index = FaceIndex(galleries.client, name)
    if args.show:
        found = calibration.stored(index)
        if args.json:
            print(json.dumps(asdict(found) if found else None))
        else:
            print("\n".join(found.lines()) if found else
                  f"{name}: no gallery calibration; the model's threshold {index.info().threshold} applies")
        return EXIT_OK
    if args.clear:
        calibration.store(index, None)
        audit(settings, "calibration_clear", collection=name)
        print(f"{name}: gallery calibration cleared; the model's threshold {index.info().threshold} applies")
        return EXIT_OK
    result = calibration.calibrate(index, args.fpir, model_threshold=index.info().threshold, sample=args.sample)
    if not args.dry_run:
        calibration.store(index, result)
        audit(settings, "calibrate", collection=name, threshold=result.threshold, target_fpir=args.fpir)
    if args.json:
        print(json.dumps(asdict(result)))
    else:
        print("\n".join([f"{name}:", *result.lines(),
                         "(dry run: nothing kept)" if args.dry_run else "kept with the collection: searches use it"]))
    return EXIT_OK
