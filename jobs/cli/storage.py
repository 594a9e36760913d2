"""`arcmatch alias`, `arcmatch collections`, `arcmatch archive`: where a gallery's faces are kept. A gallery is an
alias over one collection per model (a re-embed adds one): `alias` shows which it serves, switches or rolls back,
`collections` lists them or drops one no longer in service, and `archive` reports on or compacts the archive of
face images every re-embed reads from. `--gallery` names the gallery (its alias), as everywhere else; switches,
rollbacks and drops are written to the audit trail (jobs/audit.py) like the API's writes, with the operator's login
as the key name.
"""

from __future__ import annotations

import argparse

from common.errors import EXIT_OK, BadInput, NotFound
from jobs.cli.options import archive_root, audit, open_gallery, settings_from, store_flags

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

    p = sub.add_parser("archive", help="the gallery's face archive: stats, compact (removes deleted faces' images)")
    p.add_argument("action", choices=["stats", "compact"])
    store_flags(p)
    p.set_defaults(run=archive)


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
