"""`arcmatch alias`, `arcmatch collections`, `arcmatch archive`: where a gallery's faces are kept. A gallery is an
alias over one collection per model (a re-embed adds one): `alias` shows which it serves, switches or rolls back,
`collections` lists them or drops one no longer in service, and `archive` reports on or compacts the archive of
face images every re-embed reads from. `--gallery` names the gallery (its alias), as everywhere else; switches,
rollbacks and drops are written to the audit trail (jobs/audit.py) like the API's writes, with the operator's login
as the key name.
"""

from __future__ import annotations

import argparse
import sys

from common.errors import EXIT_OK, EXIT_PARTIAL, BadInput, NotFound
from jobs.cli.options import (
    archive_root,
    audit,
    cosine,
    default_report,
    detector_flag,
    job_console,
    model_flag,
    open_gallery,
    ray_flag,
    settings_from,
    store_flags,
    writable,
)

NOTHING_TO_READ = "there is nothing to re-embed from"  # the archive is what a re-embed reads


def register(sub) -> None:
    p = sub.add_parser("alias", help="which collection a gallery serves: show, switch, rollback")
    p.add_argument("action", choices=["show", "switch", "rollback"])
    p.add_argument("target", nargs="?", help="switch: the collection to serve")
    lose_flag(p, "switch, rollback: the number of faces served now that the other collection lacks, which leave "
                 "every search")
    store_flags(p)
    p.set_defaults(run=alias)

    p = sub.add_parser("collections", help="a gallery's collections, one per model: list, drop")
    p.add_argument("action", choices=["list", "drop"])
    p.add_argument("target", nargs="?", help="drop: the collection (never the one in service)")
    lose_flag(p, "drop: the number of faces only this collection holds (neither the one in service nor the "
                 "archive), gone for good")
    store_flags(p)
    p.set_defaults(run=collections)

    p = sub.add_parser("archive", help="the gallery's face archive: stats, compact (removes deleted faces' "
                                       "images), restore (the gallery made again in a store from its archive)")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, what in (("stats", "faces live and dead, parts, bytes"),
                       ("compact", "rewrite the archive without deleted faces' images: gone from storage")):
        q = actions.add_parser(name, help=what)
        store_flags(q)
        q.set_defaults(run=archive)
    q = actions.add_parser("restore", help="embed the archive's live faces into this store's gallery (a lost "
                                           "Milvus, or a gallery moved from a Lite file to a server): never "
                                           "removes a face, and a re-run goes on where it stopped")
    model_flag(q, "the model to embed them with (the gallery's own, for a move or a lost store)")
    store_flags(q)
    q.add_argument("--from-archive", metavar="URI",
                   help="the archive to read (default: this store's, ARCMATCH_ARCHIVE_URI or beside a Lite file); "
                        "another is copied into this store's first")
    q.add_argument("--threshold", type=cosine, help="the collection's threshold (default: the model's calibrated "
                                                   "one, or none, as ingest makes a gallery)")
    q.add_argument("--dry-run", action="store_true", help="say what would happen, change nothing")
    q.add_argument("--errors", default=default_report("restore_errors.csv"), type=writable(),
                   help="CSV report of the faces that cannot be embedded, with the reasons (default: %(default)s)")
    detector_flag(q)
    q.add_argument("--batch-size", type=int, default=64)
    q.add_argument("--concurrency", type=int, default=1, help="embedding actors")
    q.add_argument("--index", default="HNSW", choices=["HNSW", "IVF_FLAT", "DISKANN", "FLAT", "AUTOINDEX"])
    ray_flag(q)
    q.set_defaults(run=restore)


def lose_flag(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--lose", type=int, default=0, metavar="N",
                   help=f"{what}: told back as the confirmation; refused while it is not zero and not told")


def alias(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    galleries = open_gallery(settings)
    if args.action == "switch":
        if not args.target:
            raise BadInput("alias switch needs the collection to serve (see `arcmatch collections list`)")
        before = galleries.switch(args.target, lose=args.lose)
        audit(settings, "alias_switch", collection=args.target, previous=before, lost=args.lose)
        print(f"{settings.gallery} -> {args.target} (was {before})")
    elif args.action == "rollback":
        before = galleries.target()
        now = galleries.rollback(lose=args.lose)
        audit(settings, "alias_rollback", collection=now, previous=before, lost=args.lose)
        print(f"{settings.gallery} -> {now} (was {before})")
    else:
        serving = galleries.serving()
        if serving is None:
            raise NotFound(f"gallery {settings.gallery!r} does not exist")
        print(f"{settings.gallery} -> {serving}")
    return EXIT_OK


def collections(args: argparse.Namespace) -> int:
    from indexer.archive import FaceArchive

    settings = settings_from(args)
    galleries = open_gallery(settings)
    if args.action == "drop":
        if not args.target:
            raise BadInput("collections drop needs the collection's name (see `arcmatch collections list`)")
        root = settings.archive_root()
        archived = FaceArchive(root, settings.gallery).archived_ids() if root is not None else None
        galleries.drop(args.target, archived=archived, lose=args.lose)
        audit(settings, "collection_drop", collection=args.target, lost=args.lose)
        print(f"dropped {args.target}")
        return EXIT_OK
    from indexer import calibration
    from indexer.store import FaceIndex

    found = galleries.collections()
    if not found:
        raise NotFound(f"gallery {settings.gallery!r} has no collections: it does not exist")
    names = {c.name for c in found}
    for c in found:
        index = FaceIndex(galleries.client, c.name)
        faces, calibrated = index.count(), calibration.stored(index)
        mark = "*" if c.serving else " "
        gone = "" if c.previous in names else ", dropped: no rollback"  # as `alias rollback` would find it
        model = "none" if c.threshold is None else f"{c.threshold:.4f}"
        # the one a search answers at first: a collection's own calibration wins over the model's
        threshold = (f"{calibrated.threshold:.4f} (the gallery's calibration; the model's {model})" if calibrated
                     else "none (not calibrated)" if c.threshold is None else f"{model} (the model's)")
        print(f"{mark} {c.name}  model {c.model_version}  dim {c.dim}  threshold {threshold}  faces {faces}"
              + (f"  (previous: {c.previous}{gone})" if c.previous else ""))
    return EXIT_OK


def archive(args: argparse.Namespace) -> int:
    from indexer.archive import FaceArchive

    settings = settings_from(args)
    kept = FaceArchive(archive_root(settings, NOTHING_TO_READ), settings.gallery)
    stats = kept.compact() if args.action == "compact" else kept.stats()
    if not stats.parts and not stats.tombstones and open_gallery(settings).serving() is None:
        # an archive outlives its store (it is how a lost one is rebuilt), so only a name found in neither is wrong
        raise NotFound(f"gallery {settings.gallery!r} does not exist: no faces in its archive or its store")
    print("\n".join(stats.lines()))
    return EXIT_OK


def restore(args: argparse.Namespace) -> int:
    from jobs.pipelines.reading import SKIPPED_HEADER
    from jobs.pipelines.report import write_error_report
    from jobs.pipelines.restore import restore as run_restore
    from jobs.runtime import init_ray

    settings = settings_from(args).require("model")
    own = settings.archive_root()
    source = args.from_archive or archive_root(settings, "there is nothing to restore from (give --from-archive)")
    init_ray(settings.ray_address)
    with job_console(settings, "restore") as console:
        summary = run_restore(str(settings.model), milvus=settings.milvus_uri, token=settings.token(),
                              gallery=settings.gallery, archive=source, archive_to=own, threshold=args.threshold,
                              policy=settings.face_policy(threads=1), dry_run=args.dry_run,
                              batch_size=args.batch_size, embed_concurrency=args.concurrency, index_type=args.index,
                              console=console)
        console.finish(summary, "partial" if summary.skipped else "ok")
    print("\n".join(summary.lines()))
    write_error_report(args.errors, summary.skipped, SKIPPED_HEADER)
    if summary.skipped:
        print(f"faces that cannot be embedded and why are listed in {args.errors}", file=sys.stderr)
    if not args.dry_run:
        audit(settings, "archive_restore", collection=summary.collection, faces=summary.in_store,
              embedded=summary.embedded, skipped=len(summary.skipped), source=source)
    return EXIT_PARTIAL if summary.skipped else EXIT_OK
