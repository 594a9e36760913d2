"""`arcmatch galleries`: the galleries one store holds, listed, made and erased as a whole.

A gallery is one collection per model behind an alias (indexer/galleries.py), its face archive and its calibration;
each is apart from every other (docs/BENCHMARKS.md, "Many galleries in one store", says why a collection per
gallery). Making one before its first face fixes the model it is served by. Erasing one is the one command that
removes every face of a gallery, archive included: it counts them first and refuses unless told that count
(`--erase N`), so a wrong name never costs a gallery; it is written to the audit trail like every other change.
"""

from __future__ import annotations

import argparse

from common.errors import EXIT_OK, BadInput, Conflict, NotFound
from common.names import counted
from jobs.cli.options import audit, settings_from, share


def register(sub) -> None:
    p = sub.add_parser("galleries", help="the galleries of the store: list, create NAME, delete NAME --erase N")
    p.add_argument("action", choices=["list", "create", "delete"])
    p.add_argument("name", nargs="?", help="create, delete: the gallery")
    p.add_argument("--model", help="create: the model it is served by (env ARCMATCH_MODEL)")
    p.add_argument("--fpir", type=share, help="create: the FPIR its calibrations aim at when none is given "
                                              "(default: 0.01)")
    p.add_argument("--erase", type=int, metavar="N", help="delete: the number of faces it holds, as a confirmation")
    p.add_argument("--milvus", help="Milvus Lite file or server URI (env ARCMATCH_MILVUS_URI; default ./arcmatch.db)")
    p.set_defaults(run=galleries)


def galleries(args: argparse.Namespace) -> int:
    from indexer.galleries import Galleries, check_gallery
    from indexer.store import connect
    from jobs import gallery_admin

    if args.action != "list" and not args.name:
        raise BadInput(f"galleries {args.action} needs the gallery's name")
    args.gallery = args.name  # the one gallery the settings name (its archive, the audit records)
    settings = settings_from(args)
    client = connect(settings.milvus_uri, settings.token())
    try:
        if args.action == "list":
            from indexer import calibration
            from indexer.store import FaceIndex

            for found in gallery_admin.summaries(client)[0]:
                collections = len(Galleries(client, found.gallery).collections())
                faces = "not countable now (the store is loading it; try again)" if found.faces is None \
                    else found.faces
                # a target alone read like a calibration: say whether the gallery has one
                calibrated = calibration.stored(FaceIndex(client, found.gallery))
                said = (f"calibrated: threshold {calibrated.threshold:.4f} for FPIR {calibrated.target_fpir:g}"
                        if calibrated else f"not calibrated (its target FPIR {found.target_fpir:g})")
                print(f"{found.gallery}\tmodel {found.model_version}\tfaces {faces}\t{said}\t"
                      f"collections {collections}")
            return EXIT_OK
        gallery = Galleries(client, check_gallery(args.name))
        if args.action == "create":
            return _create(gallery, settings, args.fpir)
        return _delete(gallery, settings, args.erase)
    finally:
        client.close()


def _create(gallery, settings, target_fpir: float | None) -> int:
    from embedder.embed import open_embedder
    from jobs import gallery_admin

    if gallery.serving() is not None:  # before the model is loaded: the answer does not need it
        raise Conflict(f"gallery {gallery.gallery!r} exists already (`arcmatch galleries list`)")
    embedder = open_embedder(settings.require("model").model)
    index = gallery_admin.create(gallery.client, gallery.gallery, embedder, target_fpir)
    audit(settings, "gallery_create", gallery=gallery.gallery, collection=index.collection)
    print(f"created gallery {gallery.gallery!r} (model {embedder.spec.version}, collection {index.collection})")
    return EXIT_OK


def _delete(gallery, settings, confirmed: int | None) -> int:
    from jobs import gallery_admin

    try:
        erased = gallery_admin.erase(gallery.client, gallery.gallery, settings.archive_root(), confirmed,
                                     flag="--erase ")
    except NotFound:
        raise NotFound(f"no gallery {gallery.gallery!r} in this store (`arcmatch galleries list`)") from None
    audit(settings, "gallery_delete", gallery=erased.gallery, faces=erased.faces, archived=erased.archived,
          collections=erased.collections)
    print(f"erased gallery {erased.gallery!r}: {counted(erased.faces, 'face')}, "
          f"{counted(erased.archived, 'archived image')}, {counted(len(erased.collections), 'collection')}")
    return EXIT_OK
