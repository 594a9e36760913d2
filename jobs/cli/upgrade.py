"""`arcmatch reembed`, `arcmatch alias`, `arcmatch collections`, `arcmatch archive`: moving a gallery to a new model.

    arcmatch reembed --model NEW [--collection faces] [--dry-run] [--detector YUNET.onnx]
                                    # archive -> NEW's collection, then the alias; a face it cannot embed
                                    # refuses the switch (--allow-missing leaves it behind)
    arcmatch alias show | switch COLLECTION | rollback
    arcmatch collections list | drop COLLECTION
    arcmatch archive stats | compact

`--collection` names the gallery (its alias), as everywhere else. Switches, rollbacks, drops and re-embeds are
written to the audit trail (jobs/audit.py) like the API's writes, with the operator's login as the key name.
"""

from __future__ import annotations

import argparse
import sys

from common.errors import EXIT_OK, EXIT_PARTIAL, BadInput
from jobs.cli.options import (
    archive_root,
    audit,
    detector_flag,
    model_flag,
    open_gallery,
    ray_flag,
    settings_from,
    store_flags,
)
from jobs.progress import Console

NOTHING_TO_READ = "there is nothing to re-embed from"


def register(sub) -> None:
    p = sub.add_parser("reembed", help="embed a gallery's archived faces with a new model, then switch its alias")
    model_flag(p, "the new model")
    store_flags(p)
    p.add_argument("--threshold", type=float, help="the new collection's threshold (default: the model's calibrated "
                                                   "one; a model without one needs this)")
    p.add_argument("--dry-run", action="store_true", help="say what would happen, change nothing")
    p.add_argument("--no-switch", action="store_true", help="fill the new collection, leave the alias where it is")
    p.add_argument("--allow-missing", action="store_true",
                   help="switch even if faces in service cannot be embedded again (never archived, or no face "
                        "found in their photo): they are left behind")
    p.add_argument("--errors", default="reembed_errors.csv",
                   help="CSV report of the faces that cannot be embedded again, with the reasons")
    detector_flag(p)
    p.add_argument("--grace", type=float, default=None,
                   help="seconds the old model's processes may finish writes after the switch (default: the "
                        "request timeout + 1)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--concurrency", type=int, default=1, help="embedding actors")
    p.add_argument("--index", default="HNSW", choices=["HNSW", "IVF_FLAT", "DISKANN", "FLAT", "AUTOINDEX"])
    ray_flag(p)
    p.set_defaults(run=reembed)

    p = sub.add_parser("alias", help="which collection a gallery serves: show, switch, rollback")
    p.add_argument("action", choices=["show", "switch", "rollback"])
    p.add_argument("target", nargs="?", help="switch: the collection to serve")
    store_flags(p)
    p.set_defaults(run=alias)

    p = sub.add_parser("collections", help="a gallery's collections, one per model: list, drop")
    p.add_argument("action", choices=["list", "drop"])
    p.add_argument("target", nargs="?", help="drop: the collection (never the one in service)")
    store_flags(p)
    p.set_defaults(run=collections)

    p = sub.add_parser("archive", help="the gallery's face archive: stats, compact (removes deleted faces' images)")
    p.add_argument("action", choices=["stats", "compact"])
    store_flags(p)
    p.set_defaults(run=archive)


def reembed(args: argparse.Namespace) -> int:
    from jobs.pipelines.reading import SKIPPED_HEADER
    from jobs.pipelines.reembed import FacesLeftBehind
    from jobs.pipelines.reembed import reembed as run_reembed
    from jobs.pipelines.report import write_error_report
    from jobs.runtime import init_ray

    settings = settings_from(args).require("model")
    init_ray(settings.ray_address)  # the dry run reads every pending face the way the copy will, on Ray Data too
    grace = args.grace if args.grace is not None else settings.request_timeout_s + 1.0

    def report(summary) -> None:
        print("\n".join(summary.lines()))
        write_error_report(args.errors, summary.skipped, SKIPPED_HEADER)  # every run: no stale list from the last
        if summary.skipped:
            print(f"faces that cannot be embedded again and why are listed in {args.errors}", file=sys.stderr)

    try:
        summary = run_reembed(str(settings.model), milvus=settings.milvus_uri, token=settings.token(),
                              gallery=settings.collection, archive=archive_root(settings, NOTHING_TO_READ),
                              threshold=args.threshold, policy=settings.face_policy(threads=1),
                              dry_run=args.dry_run, switch=not args.no_switch, allow_missing=args.allow_missing,
                              grace_s=grace, batch_size=args.batch_size, embed_concurrency=args.concurrency,
                              index_type=args.index, console=Console())
    except FacesLeftBehind as exc:
        if exc.summary is not None:
            report(exc.summary)
        raise
    report(summary)
    if not args.dry_run:
        audit(settings, "reembed", collection=summary.target, previous=summary.source, switched=summary.switched,
              faces=summary.in_target, skipped=len(summary.skipped), left_behind=summary.left_behind)
    return EXIT_PARTIAL if summary.skipped or summary.left_behind else EXIT_OK


def alias(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    galleries = open_gallery(settings)
    if args.action == "switch":
        if not args.target:
            raise BadInput("alias switch needs the collection to serve (see `arcmatch collections list`)")
        before = galleries.switch(args.target)
        audit(settings, "alias_switch", collection=args.target, previous=before)
        print(f"{settings.collection} -> {args.target} (was {before})")
    elif args.action == "rollback":
        before = galleries.target()
        now = galleries.rollback()
        audit(settings, "alias_rollback", collection=now, previous=before)
        print(f"{settings.collection} -> {now} (was {before})")
    else:
        serving = galleries.serving()
        print(f"{settings.collection} -> {serving}" if serving else f"gallery {settings.collection!r} does not exist")
    return EXIT_OK


def collections(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    galleries = open_gallery(settings)
    if args.action == "drop":
        if not args.target:
            raise BadInput("collections drop needs the collection's name (see `arcmatch collections list`)")
        galleries.drop(args.target)
        audit(settings, "collection_drop", collection=args.target)
        print(f"dropped {args.target}")
        return EXIT_OK
    from indexer.store import FaceIndex

    for c in galleries.collections():
        faces = FaceIndex(galleries.client, c.name).count()
        mark = "*" if c.serving else " "
        print(f"{mark} {c.name}  model {c.model_version}  dim {c.dim}  threshold {c.threshold}  faces {faces}"
              + (f"  (previous: {c.previous})" if c.previous else ""))
    return EXIT_OK


def archive(args: argparse.Namespace) -> int:
    from indexer.archive import FaceArchive

    settings = settings_from(args)
    kept = FaceArchive(archive_root(settings, NOTHING_TO_READ), settings.collection)
    stats = kept.compact() if args.action == "compact" else kept.stats()
    print("\n".join(stats.lines()))
    return EXIT_OK
