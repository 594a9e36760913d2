"""`arcmatch ingest`: a tree or manifest of photos into the gallery as one Ray Data job (read, find the faces, embed,
write to Milvus, keep each photo in the archive), with a CSV of what was skipped and why. A gallery that grows can
outgrow its calibration, so the command ends by saying so, or by calibrating again with the same target.
"""

from __future__ import annotations

import argparse
import sys

from common.errors import EXIT_OK, EXIT_PARTIAL
from jobs.cli.options import (
    audit,
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


def register(sub) -> None:
    p = sub.add_parser("ingest", help="embed a gallery into Milvus with Ray Data")
    p.add_argument("source", help="identity/image tree, or a CSV/Parquet manifest (uri, identity[, face_id, metadata])")
    model_flag(p, "the embedding model")
    detector_flag(p)
    store_flags(p)
    p.add_argument("--unlabelled", action="store_true",
                   help="faces nobody has named: every image of a tree (any folders), or a manifest's rows without "
                        "an identity; kept for `arcmatch cluster`, never a search's answer (faces default: all)")
    p.add_argument("--strangers", action="store_true",
                   help="as --unlabelled, and these are people who will never be enrolled (a public photo set of "
                        "the same kind, visitors): `arcmatch calibrate` counts them as strangers without asking "
                        "whether they look like someone enrolled, and from 500 of them reads the rate off them")
    p.add_argument("--include-deleted", action="store_true",
                   help="take back photos whose faces were deleted from the gallery since they were ingested (by "
                        "default they are skipped and listed: a deleted person stays deleted)")
    p.add_argument("--errors", default=default_report("ingest_errors.csv"), type=writable(),
                   help="CSV report of skipped files (default: %(default)s)")
    p.add_argument("--export-parquet", type=writable(), help="also write the embeddings to this Parquet file")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--concurrency", type=int, default=1, help="embedding actors")
    p.add_argument("--cpus-per-actor", type=float, default=1.0, help="Ray CPUs reserved by each embedding actor")
    p.add_argument("--threads-per-actor", type=int,
                   help="inference threads per embedding actor (default: the runtime's, one per core)")
    p.add_argument("--gpus-per-actor", type=float, help="default: 1 when the Ray cluster has GPUs, else 0")
    p.add_argument("--write-concurrency", type=int, help="parallel write tasks (Milvus server only)")
    p.add_argument("--faces", choices=["one", "largest", "all"],
                   help="faces taken from each photo, for models that want aligned faces: exactly one (else the "
                        "photo is skipped with the reason), the largest, or all (only with --unlabelled or "
                        "--strangers, their default: a named photo's other faces are not that person) (env "
                        "ARCMATCH_FACE_SELECT; default one)")
    p.add_argument("--index", default="HNSW", choices=["HNSW", "IVF_FLAT", "DISKANN", "FLAT", "AUTOINDEX"],
                   help="vector index type for a new collection (default %(default)s)")
    ray_flag(p)
    p.set_defaults(run=ingest)


def ingest(args: argparse.Namespace) -> int:
    from jobs.pipelines.ingest import ingest as run_ingest
    from jobs.runtime import init_ray

    settings = settings_from(args).require("model")
    init_ray(settings.ray_address)
    with job_console(settings, "ingest") as console:
        summary = run_ingest(args.source, settings.model, milvus=settings.milvus_uri, token=settings.token(),
                             gallery=settings.gallery, batch_size=args.batch_size,
                             embed_concurrency=args.concurrency, cpus_per_actor=args.cpus_per_actor,
                             threads_per_actor=args.threads_per_actor, gpus_per_actor=args.gpus_per_actor,
                             write_concurrency=args.write_concurrency, index_type=args.index,
                             errors_csv=args.errors, export_parquet=args.export_parquet, console=console,
                             policy=settings.face_policy(args.faces or ("all" if args.unlabelled or args.strangers
                                                                        else None), threads=1),
                             archive=settings.archive_root(), unlabelled=args.unlabelled, strangers=args.strangers,
                             max_pixels=settings.max_pixels, include_deleted=args.include_deleted)
        console.finish(summary, "partial" if summary.skipped else "ok")
    print("\n".join(summary.lines() + follow_growth(settings)))
    if summary.skipped:
        print(f"skipped files and reasons are listed in {args.errors}", file=sys.stderr)
        return EXIT_PARTIAL
    return EXIT_OK


def follow_growth(settings) -> list[str]:
    """What the ingestion's growth did to the gallery's calibration: re-made with the same target and method when
    it no longer meets its target (ARCMATCH_RECALIBRATE_ON_GROWTH), else said."""
    from common.errors import ArcmatchError
    from indexer import calibration
    from indexer.store import FaceIndex
    from jobs.calibration_watch import count_identities, recalibrated

    galleries = open_gallery(settings)
    name = galleries.serving()
    index = FaceIndex(galleries.client, name) if name else None
    found = calibration.stored(index) if index is not None else None
    if found is None:
        return []
    now = count_identities(index)
    if not settings.recalibrate_on_growth:
        return found.growth_lines(now)
    try:
        fresh = recalibrated(index, found, now)
    except ArcmatchError as exc:
        return [*found.growth_lines(now), f"could not calibrate again: {exc}"]
    if fresh is None:
        return []
    calibration.store(index, fresh)
    audit(settings, "calibrate", collection=name, threshold=fresh.threshold, target_fpir=fresh.target_fpir,
          by="growth")
    return [f"the gallery grew from {found.identities} to {now} identities: calibrated again for FPIR "
            f"{found.target_fpir}, threshold {found.threshold:.4f} -> {fresh.threshold:.4f}",
            *([fresh.set_aside_line()] if fresh.suspects else [])]
