"""`arcmatch gallery`: what is wrong with the gallery's labels, and fixing it from the command line as the review
page does. `check` lists one person under two names, photos more like another identity than their own, photos like
no one else of their identity and identities with no face past the quality gate, reading every labelled face's
vector; `merge`, `move`, `reject`, `confirm` and `distinct` resolve them through the same curation the API's
routes use, and are written to the audit trail as the API's writes are. `stranger` confirms unlabelled faces a
calibration left out as looking enrolled (indexer/strangers.py).
"""

from __future__ import annotations

import argparse
import json

from common.errors import EXIT_OK, BadInput, NotFound
from common.names import shown
from jobs.cli.options import audit, left_out, model_flag, open_gallery, settings_from, store_flags


def register(sub) -> None:
    p = sub.add_parser("gallery", help="what is wrong with the gallery's labels (one person under two names, "
                                       "photos of someone else, two people under one name, identities below the "
                                       "quality gate), and fixing it")
    actions = p.add_subparsers(dest="action", required=True,
                               metavar="check|merge|move|reject|confirm|distinct|stranger|name")
    q = actions.add_parser("check", help="list what looks wrong, with faces and scores")
    store_flags(q)
    q.add_argument("--json", action="store_true", help="print the findings as JSON")
    q.set_defaults(run=gallery_check)
    q = actions.add_parser("merge", help="every face of OTHER becomes INTO's (one person under two names)")
    q.add_argument("into")
    q.add_argument("other")
    q.add_argument("--proceed", action="store_true", help="merge two names said to be different people (`distinct`), "
                                                          "or none of whose faces match at the gallery's threshold")
    model_flag(q, "the gallery's model")
    store_flags(q)
    q.set_defaults(run=gallery_fix)
    q = face_action(actions, "move", "a face filed under the wrong person goes to another", "--from",
                    "the identity it is filed under")
    q.add_argument("--to", required=True, help="the identity it shows")
    q.add_argument("--new", action="store_true", help="--to is someone enrolled under no name yet (without it, a "
                                                      "name no face has is refused: a typo would make a new identity)")
    face_action(actions, "reject", "a face is not this person (someone enrolled nowhere): it leaves the identity, "
                "unlabelled, and is never put back without --proceed", "--from", "the identity it is filed under")
    face_action(actions, "confirm", "a listed face is this person after all (a hard photo): it stays, and is not "
                "listed again while it is there", "--in", "the identity it is filed under, and shows")
    q = actions.add_parser("distinct", help="FIRST and SECOND are different people: never listed as one again, "
                                            "and their scores count as a non-match when calibrating")
    q.add_argument("first")
    q.add_argument("second")
    model_flag(q, "the gallery's model")
    store_flags(q)
    q.set_defaults(run=gallery_fix)
    q = actions.add_parser("stranger", help="these unlabelled faces (by source, as `arcmatch calibrate` lists those "
                                            "it left out) are nobody who will be enrolled: calibration counts them "
                                            "as strangers as they are")
    q.add_argument("sources", nargs="*", metavar="SOURCE")
    q.add_argument("--proceed", action="store_true", help="confirm them even where one matches someone enrolled at "
                                                          "or above the gallery's threshold")
    q.add_argument("--kept", action="store_true", help="every face kept from searches (ARCMATCH_KEEP_UNKNOWN_FACES) "
                   "that is still unnamed: say it once the enrolled people among them are named; calibration then "
                   "reads them as strangers answered unknown below the threshold of their day")
    store_flags(q)
    q.set_defaults(run=gallery_stranger)
    q = actions.add_parser("name", help="these unlabelled faces (by source, as `arcmatch calibrate` lists those it "
                                        "left out as looking like someone enrolled) are IDENTITY's photos: they "
                                        "become its enrolled faces")
    q.add_argument("identity")
    q.add_argument("sources", nargs="+", metavar="SOURCE")
    q.add_argument("--proceed", action="store_true", help="name faces that also match another identity, or were "
                                                          "rejected from this one")
    model_flag(q, "the gallery's model")
    store_flags(q)
    q.set_defaults(run=gallery_fix)


def _serving_index(settings):
    """The collection serving the gallery, read directly (no model loaded); NotFound when there is none."""
    from indexer.store import FaceIndex

    galleries = open_gallery(settings)
    name = galleries.serving()
    if name is None:
        raise NotFound(f"gallery {settings.gallery!r} does not exist; ingest or enroll faces first")
    return FaceIndex(galleries.client, name)


def gallery_stranger(args: argparse.Namespace) -> int:
    from indexer import calibration
    from indexer.archive import FaceArchive
    from indexer.strangers import confirm, confirm_kept
    from indexer.tail import MIN_STRANGERS
    from indexer.writer import GalleryWriter

    if bool(args.sources) == bool(args.kept):
        raise BadInput("give the sources of unlabelled faces, or --kept for the faces kept from searches (not both)")
    settings = settings_from(args)
    index = _serving_index(settings)
    root = settings.archive_root()  # the mark goes into the archive too: a re-embed carries it
    writer = GalleryWriter(index, FaceArchive(root, settings.gallery) if root else None, open_gallery(settings))
    found = calibration.stored(index)
    threshold = found.threshold if found is not None else index.info().threshold
    marked, before = confirm_kept(writer) if args.kept else (confirm(writer, args.sources, threshold, args.proceed), 0)
    audit(settings, "confirm_strangers", face_ids=[str(f) for f in marked], **({"kept": True} if args.kept else {}))
    if args.kept and not marked:
        print(f"no face kept from searches left to confirm ({before} confirmed before)")
    elif args.kept:
        print(f"{len(marked)} face(s) kept from searches confirmed as strangers ({before} before): the next `arcmatch "
              f"calibrate` reads them below the threshold they were answered unknown under, from {MIN_STRANGERS} on "
              f"and where fewer than {MIN_STRANGERS} unlabelled faces were ingested")
    else:
        print(f"{len(marked)} unlabelled face(s) confirmed as strangers: the next `arcmatch calibrate` counts them as "
              f"they are")
    return EXIT_OK


def face_action(actions, name: str, what: str, flag: str, where: str) -> argparse.ArgumentParser:
    """`gallery NAME FACE --from|--in IDENTITY`: the actions on one face of one identity (move, reject, confirm)."""
    q = actions.add_parser(name, help=what)
    q.add_argument("face", type=int)
    q.add_argument(flag, dest="identity", required=True, help=where)
    model_flag(q, "the gallery's model")
    store_flags(q)
    q.set_defaults(run=gallery_fix)
    return q


def gallery_check(args: argparse.Namespace) -> int:
    """Every labelled face's vector is read: the findings are the gallery's, not a sample's."""
    from indexer.health import check_index

    found = check_index(_serving_index(settings_from(args)))
    print(json.dumps(found.as_json()) if args.json else "\n".join(found.lines()))
    return EXIT_OK


def gallery_fix(args: argparse.Namespace) -> int:
    """merge, move, reject, confirm, distinct and name: what the review page's health section does, audited as the
    API's are."""
    from jobs.curation import Curator
    from jobs.service import IdentityService

    settings = settings_from(args)
    service = IdentityService.open(settings)
    try:
        curator = Curator(service, None)
        if args.action == "merge":
            merged = curator.merge_identities(args.into, args.other, proceed=args.proceed)
            audit(settings, "merge_identity", identity=args.into, merged_from=args.other,
                  face_ids=[str(f) for f in merged.face_ids])
            print(f"{len(merged.face_ids)} faces of {shown(args.other)} are now under {shown(args.into)}"
                  + left_out(merged.skipped))
        elif args.action == "move":
            moved = curator.move_face(args.identity, args.face, args.to, new=args.new)
            audit(settings, "move_face", identity=args.identity, moved_to=args.to, face_ids=[str(args.face)])
            print(f"face {args.face} is now under {shown(moved.identity)} (and not {shown(args.identity)})")
        elif args.action == "confirm":
            curator.confirm(args.identity, args.face)
            audit(settings, "confirm_face", identity=args.identity, face_ids=[str(args.face)])
            print(f"face {args.face} is {shown(args.identity)}: not listed again while it is there")
        elif args.action == "reject":
            curator.reject(args.identity, args.face)
            audit(settings, "reject_face", identity=args.identity, face_ids=[str(args.face)])
            print(f"face {args.face} is not {shown(args.identity)}: unlabelled now, and never put back there without "
                  "--proceed")
        elif args.action == "name":
            from indexer.strangers import unlabelled_from

            faces = sorted(unlabelled_from(service.index, args.sources, "nothing named"))
            named = curator.name_faces(faces, args.identity, proceed=args.proceed)
            audit(settings, "name_faces", identity=named.identity, face_ids=[str(f) for f in named.face_ids])
            print(f"{len(named.face_ids)} face(s) named {shown(named.identity)}" + left_out(named.skipped))
        else:
            found = curator.different_people(args.first, args.second)
            audit(settings, "distinct", identity=args.first, other=args.second)
            print(f"{shown(args.first)} and {shown(args.second)} are different people ({len(found)} such pair(s) kept)")
        stale = service.lookup.gallery_calibration()
        if stale is not None and args.action != "confirm":  # a confirmed photo changes no score the threshold read
            print(f"the gallery's threshold ({stale.threshold:.4f}) was calibrated before this: run `arcmatch "
                  "calibrate` again for it to count")
    finally:
        service.close()
    return EXIT_OK
