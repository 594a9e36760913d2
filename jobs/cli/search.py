"""`arcmatch search`: who is in each photo, by the same service the API answers with, so a search here and a
search there give one answer. The threshold is the gallery's calibrated one unless `--threshold` or `--fpir` says
otherwise; the answer for each face is printed as a line, or as JSON lines for scripts.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from common.errors import EXIT_OK, EXIT_PARTIAL, BadInput, NotFound
from jobs.cli.options import cosine, detector_flag, model_flag, search_flags, settings_from, share, store_flags
from jobs.cli.remote import api_flag, client_for


def register(sub) -> None:
    p = sub.add_parser("search", help="identify the face in each image: identity or unknown")
    p.add_argument("images", nargs="+")
    model_flag(p, "the embedding model (the gallery's)")
    detector_flag(p)
    store_flags(p)
    search_flags(p)
    rule = p.add_mutually_exclusive_group()
    rule.add_argument("--threshold", type=cosine,
                      help="cosine threshold (default: the gallery's calibrated one, else the model's)")
    rule.add_argument("--fpir", type=share, help="instead of a threshold: the share of strangers that may be "
                                                 "answered as someone, read from the gallery's calibration")
    p.add_argument("--faces", default="all", choices=["all", "largest"],
                   help="answer for every face in a photo, or only its largest (default %(default)s)")
    p.add_argument("--json", action="store_true", help="print JSON lines, one per face")
    api_flag(p, required=False)
    p.set_defaults(run=search)


def search(args: argparse.Namespace) -> int:
    from embedder.errors import ImageError
    from jobs.service import IdentityService

    folders = [p for p in args.images if Path(p).is_dir()]
    if folders:
        raise BadInput(f"{', '.join(folders)}: a folder, not a photo; name its photos ({folders[0].rstrip('/')}/*.jpg)")
    missing = [p for p in args.images if not Path(p).is_file()]
    if missing:
        raise NotFound(f"no such image: {', '.join(missing)}")
    client = client_for(args)
    if client is not None:
        return _search_remote(client, args)
    service = IdentityService.open(settings_from(args))
    faceless = []
    try:
        threshold = args.threshold
        if args.fpir is not None:
            service.watch.count_now()  # the size now: the rate is at that size (a search never re-calibrates)
            threshold = service.lookup.threshold(fpir=args.fpir)
        source = service.lookup.threshold_source(args.threshold, args.fpir)
        for path in args.images:
            try:
                [matches] = service.identify([Path(path).read_bytes()], threshold, select=args.faces)
            except ImageError as exc:  # this photo's (no face, unreadable); the others are still answered
                faceless.append(f"{path}: {exc}")
                continue
            for n, match in enumerate(matches):
                _print_match(path, n, match, len(matches), source, as_json=args.json, fpir=args.fpir)
    finally:
        service.close()
    return _done(faceless, len(args.images), ImageError)


def _search_remote(client, args: argparse.Namespace) -> int:
    """The same search through a running service (arcmatch_client): the same lines, the service's answers."""
    if args.ef is not None:
        raise BadInput("--ef is the service's own setting (ARCMATCH_SEARCH_EF where it runs), not a request's")
    faceless = []
    with client:
        for path in args.images:
            try:
                faces = client.search(path, threshold=args.threshold, fpir=args.fpir, k=args.k, faces=args.faces)
            except BadInput as exc:  # this photo's (no face, unreadable); the others are still answered
                faceless.append(f"{path}: {exc}")
                continue
            for n, face in enumerate(faces):
                if args.json:
                    print(json.dumps(_json_line(path, n, asdict(face))))
                    continue
                print(_line(path, n, len(faces), face.face.box, face.identity if face.match else None, face.score,
                            face.threshold, face.threshold_source, args.fpir))
    return _done(faceless, len(args.images), BadInput)


def _print_match(path: str, n: int, match, count: int, source: str, *, as_json: bool, fpir: float | None) -> None:
    from jobs.api.schemas import FaceDecisionOut

    d = match.decision
    if as_json:
        print(json.dumps(_json_line(path, n, FaceDecisionOut.of_match(match, source).model_dump())))
        return
    print(_line(path, n, count, match.face.face.box, d.identity if d.is_match else None, d.score, d.threshold,
                source, fpir))


SOURCES = {"given": "yours", "fpir": "for your FPIR", "gallery": "the gallery's calibration",
           "model": "the model's calibration", "collection": "stored with the collection"}


def _done(faceless: list[str], photos: int, error) -> int:
    """Exit 0 when every photo was answered; 3 (finished, some inputs skipped: each said on stderr) when some
    were; the photos' own error (exit 2) when none was."""
    if not faceless:
        return EXIT_OK
    if len(faceless) == photos:
        raise error("; ".join(faceless))
    for line in faceless:
        print(f"skipped {line}", file=sys.stderr)
    return EXIT_PARTIAL


def _json_line(path: str, n: int, decision: dict) -> dict:
    """A face's answer as JSON, the same with or without --api: the API's answer for the face (match, identity,
    score, threshold, candidates, face), the photo, and which face of it (1 for the first, as the lines say)."""
    return {"image": path, "face_number": n + 1, **decision}


def _line(path: str, n: int, count: int, box, identity: str | None, score: float, threshold: float,
          source: str | None, fpir: float | None = None) -> str:
    """One face's answer as a line: where it is when the photo has several, who (or unknown), the score, and the
    threshold with where it came from."""
    where = f"\tface {n + 1}/{count} at {[round(v) for v in box]}" if count > 1 else ""
    said = f", {SOURCES.get(source, source)}" if source else ""
    if source == "fpir" and fpir is not None:  # the rate asked for, as the gallery's size now reads it
        said = f", for your FPIR {fpir:g} at the gallery's size now"
    return f"{path}{where}\t{identity or 'unknown'}\tscore {score:.4f} (threshold {threshold:.4f}{said})"
