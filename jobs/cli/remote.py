"""The commands that work through a running arcmatch service with the Python client (arcmatch_client): `enroll`
(a folder or manifest of photos, one request per photo, with a progress bar) and `identities`, and
`search --api URL`. The service's URL and key come from `--api` / ARCMATCH_API_URL and ARCMATCH_API_KEY (never a
flag: a key on a command line stays in the shell's history); `--gallery` picks a gallery, else the service's
default one.
"""

from __future__ import annotations

import argparse
import json

from common.errors import EXIT_OK, EXIT_PARTIAL, BadInput
from common.names import counted
from jobs.cli.options import default_report, writable
from jobs.settings import Settings


def api_flag(p: argparse.ArgumentParser, *, required: bool) -> None:
    p.add_argument("--api", metavar="URL", help="a running arcmatch service (env ARCMATCH_API_URL), with the key "
                   "in ARCMATCH_API_KEY" + ("" if required else "; without it, the gallery is opened here"))


def gallery_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gallery", "--collection", dest="gallery",
                   help="the gallery (env ARCMATCH_GALLERY; through --api: the service's default)")


def register(sub) -> None:
    p = sub.add_parser("enroll", help="enroll a folder (a sub-folder per person) or CSV manifest (identity,path) "
                                      "through a running service")
    p.add_argument("source")
    api_flag(p, required=True)
    gallery_flag(p)
    p.add_argument("--workers", type=int, default=4, help="requests in flight (default %(default)s)")
    p.add_argument("--faces", choices=["one", "largest"], help="which face of a photo (default: exactly one)")
    p.add_argument("--proceed", action="store_true",
                   help="enroll faces that match another identity too (a bulk import of trusted labels)")
    p.add_argument("--errors", default=default_report("enroll_errors.csv"), type=writable(),
                   help="CSV report of the photos refused (default: %(default)s)")
    p.set_defaults(run=enroll)

    p = sub.add_parser("identities", help="the gallery's identities and their face counts")
    api_flag(p, required=False)
    gallery_flag(p)
    p.add_argument("--milvus", help="Milvus Lite file or server URI, without --api (env ARCMATCH_MILVUS_URI)")
    p.add_argument("--model", help="the gallery's model, without --api (env ARCMATCH_MODEL)")
    p.add_argument("--json", action="store_true", help="JSON lines")
    p.set_defaults(run=identities)


def client_for(args: argparse.Namespace, settings: Settings | None = None):
    """The client for `--api` (or ARCMATCH_API_URL) scoped to `--gallery`; None when neither names a service."""
    from arcmatch_client import Client

    settings = settings or Settings.load()
    url = getattr(args, "api", None) or settings.api_url
    if not url:
        return None
    if settings.api_key is None:
        raise BadInput("set ARCMATCH_API_KEY to the service's key (`arcmatch apikey NAME` makes one)")
    return Client(url, settings.api_key.get_secret_value(), gallery=getattr(args, "gallery", None))


def enroll(args: argparse.Namespace) -> int:
    from arcmatch_client import enroll_batch

    client = client_for(args)
    if client is None:
        raise BadInput("enroll goes through a running service: give --api URL (a local bulk load is "
                       "`arcmatch ingest`)")
    options = {"faces": args.faces, "proceed": args.proceed}
    with client:
        report = enroll_batch(client, args.source, workers=args.workers, **options)
    print(f"enrolled {counted(report.photos, 'photo')} ({counted(report.faces, 'face')}); "
          f"{len(report.failed)} refused")
    if report.failed:
        report.write_csv(args.errors)
        print(f"the refused photos and why: {args.errors} (run the same command again after fixing them: "
              "what is enrolled stays once)")
        return EXIT_PARTIAL
    return EXIT_OK


def identities(args: argparse.Namespace) -> int:
    client = client_for(args)
    if client is not None:
        with client:
            rows = list(_pages(lambda cursor, limit: _remote_page(client, cursor, limit)))
    else:
        rows = _local_identities(args)
    for name, faces in rows:
        print(json.dumps({"identity": name, "faces": faces}) if args.json else f"{name}\t{faces}")
    if not args.json:
        print(f"{len(rows)} identities, {sum(f for _, f in rows)} faces")
    return EXIT_OK


def _local_identities(args: argparse.Namespace) -> list[tuple[str, int]]:
    """The names and face counts of the collection the gallery serves, or of a given model's (`--model`): a
    listing embeds nothing, so it needs no detector, and no model at all for the gallery as served."""
    from common.errors import NotFound
    from indexer.store import FaceIndex
    from jobs.cli.options import open_gallery, settings_from

    settings = settings_from(args)
    galleries = open_gallery(settings)
    try:
        if settings.model is not None:
            from embedder.embed import open_embedder

            version = open_embedder(settings.model).spec.version
            collection = galleries.collection_for(version)
            if collection is None:
                raise NotFound(f"gallery {settings.gallery!r} has no collection of model {version}")
        elif (collection := galleries.serving()) is None:
            raise NotFound(f"gallery {settings.gallery!r} does not exist; ingest or enroll faces first")
        index = FaceIndex(galleries.client, collection)

        def page(cursor: str | None, limit: int) -> tuple[list[tuple[str, int]], str | None]:
            found = index.list_identities(cursor, limit + 1)
            return found[:limit], (found[limit - 1][0] if len(found) > limit else None)

        return list(_pages(page))
    finally:
        galleries.client.close()


def _remote_page(client, cursor: str | None, limit: int) -> tuple[list[tuple[str, int]], str | None]:
    page = client.identities(cursor, limit)
    return [(i.identity, i.faces) for i in page.identities], page.next_cursor


def _pages(fetch, limit: int = 1000):
    """Every (identity, faces) of a paged listing: `fetch(cursor, limit)` answers (rows, next cursor or None)."""
    cursor = None
    while True:
        rows, cursor = fetch(cursor, limit)
        yield from rows
        if cursor is None:
            return
