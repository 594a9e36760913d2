"""`arcmatch reembed`: a gallery moved to a new model without ingesting its photos again. Its archived faces are
embedded by the new model into a collection of that model's own, then the gallery's alias switches to it; a face in
service that cannot be embedded again refuses the switch (`--allow-missing` leaves it behind), and the old collection
stays for `arcmatch alias rollback`. `--dry-run` says what would happen; the faces that cannot be embedded again are
listed in a CSV with their reasons, and the run is written to the audit trail.
"""

from __future__ import annotations

import argparse
import sys

from common.errors import EXIT_OK, EXIT_PARTIAL
from jobs.cli.options import (
    archive_root,
    audit,
    cosine,
    default_report,
    detector_flag,
    job_console,
    model_flag,
    ray_flag,
    settings_from,
    store_flags,
    writable,
)
from jobs.cli.storage import NOTHING_TO_READ


def register(sub) -> None:
    p = sub.add_parser("reembed", help="embed a gallery's archived faces with a new model, then switch its alias")
    model_flag(p, "the new model")
    store_flags(p)
    p.add_argument("--threshold", type=cosine, help="the new collection's threshold (default: the model's calibrated "
                                                   "one; a model without one needs this)")
    p.add_argument("--dry-run", action="store_true", help="say what would happen, change nothing")
    p.add_argument("--no-switch", action="store_true", help="fill the new collection, leave the alias where it is")
    p.add_argument("--allow-missing", action="store_true",
                   help="switch even if faces in service cannot be embedded again (never archived, or no face "
                        "found in their photo): they are left behind")
    p.add_argument("--errors", default=default_report("reembed_errors.csv"), type=writable(),
                   help="CSV report of the faces that cannot be embedded again, with the reasons (default: "
                        "%(default)s)")
    detector_flag(p)
    p.add_argument("--grace", type=float, default=None,
                   help="seconds the old model's processes may finish writes after the switch (default: the "
                        "request timeout + 1)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--concurrency", type=int, default=1, help="embedding actors")
    p.add_argument("--index", default="HNSW", choices=["HNSW", "IVF_FLAT", "DISKANN", "FLAT", "AUTOINDEX"])
    ray_flag(p)
    p.set_defaults(run=reembed)


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
        with job_console(settings, "reembed") as console:
            summary = run_reembed(str(settings.model), milvus=settings.milvus_uri, token=settings.token(),
                                  gallery=settings.gallery, archive=archive_root(settings, NOTHING_TO_READ),
                                  threshold=args.threshold, policy=settings.face_policy(threads=1),
                                  dry_run=args.dry_run, switch=not args.no_switch, allow_missing=args.allow_missing,
                                  grace_s=grace, batch_size=args.batch_size, embed_concurrency=args.concurrency,
                                  index_type=args.index, console=console)
            console.finish(summary, "partial" if summary.skipped or summary.left_behind else "ok")
    except FacesLeftBehind as exc:
        if exc.summary is not None:
            report(exc.summary)
        raise
    report(summary)
    if not args.dry_run:
        audit(settings, "reembed", collection=summary.target, previous=summary.source, switched=summary.switched,
              faces=summary.in_target, skipped=len(summary.skipped), left_behind=summary.left_behind)
    return EXIT_PARTIAL if summary.skipped or summary.left_behind else EXIT_OK
