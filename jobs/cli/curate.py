"""`arcmatch calibrate`, `arcmatch cluster`, `arcmatch clusters`: the gallery's own threshold, and its unnamed faces
grouped into candidate people.

    arcmatch calibrate --fpir 0.01 [--collection faces] [--sample 5000] [--method tail|top1] [--dry-run] [--plot F]
    arcmatch calibrate --show [--plot F] | --clear
    arcmatch gallery check [--json]                                   # duplicates, misfits, below the gate
    arcmatch gallery merge INTO OTHER | move FACE --from A --to B | distinct A B   # resolving them
    arcmatch cluster [--k 20] [--method chinese-whispers|leiden|connected] [--export clusters.parquet]
    arcmatch clusters list [--min-size 2] | show CLUSTER

The result is kept with the collection the gallery serves (a collection property), so every process searching it
(the API's replicas, the CLI's search) uses it within seconds, and a re-embed's new collection starts from its own
model's calibration again. Needs no model and no images: only the vectors in the store.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from common.errors import EXIT_OK, BadInput, NotFound
from indexer.clustering import METHODS
from jobs.cli.options import archive_root, audit, model_flag, open_gallery, ray_flag, settings_from, store_flags
from jobs.progress import Console

CLUSTERS_BESIDE = "clustering keeps its runs beside it"


def register(sub) -> None:
    p = sub.add_parser("calibrate", help="choose the gallery's threshold for a target false-positive "
                                         "identification rate, from its own faces")
    store_flags(p)
    p.add_argument("--fpir", type=float, default=0.01,
                   help="target share of unknown people answered as someone (default %(default)s)")
    p.add_argument("--sample", type=int, default=5000, help="faces drawn as trials (default %(default)s)")
    p.add_argument("--method", choices=["tail", "top1"], default="tail",
                   help="tail: every cross-identity score with a model of the tail, duplicates set aside and named, "
                        "unlabelled faces as more strangers, an FPIR interval; top1: the quantile of each trial's "
                        "best non-mated score, which one duplicate enrollment decides (default %(default)s)")
    p.add_argument("--target", help="a collection of the gallery other than the one in service (a re-embed's, "
                                    "before its switch)")
    p.add_argument("--dry-run", action="store_true", help="report the threshold, keep nothing")
    p.add_argument("--show", action="store_true", help="print the calibration in use, change nothing")
    p.add_argument("--clear", action="store_true", help="forget the gallery's calibration: the model's applies")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--plot", type=Path, metavar="FILE", help="save the FNIR-vs-FPIR curve as a PNG")
    p.set_defaults(run=calibrate)

    p = sub.add_parser("gallery", help="what is wrong with the gallery's labels (one person under two names, "
                                       "photos of someone else, identities below the quality gate), and fixing it")
    actions = p.add_subparsers(dest="action", required=True, metavar="check|merge|move|distinct")
    q = actions.add_parser("check", help="list what looks wrong, with faces and scores")
    store_flags(q)
    q.add_argument("--json", action="store_true", help="print the findings as JSON")
    q.set_defaults(run=gallery_check)
    q = actions.add_parser("merge", help="every face of OTHER becomes INTO's (one person under two names)")
    q.add_argument("into")
    q.add_argument("other")
    model_flag(q, "the gallery's model")
    store_flags(q)
    q.set_defaults(run=gallery_fix)
    q = actions.add_parser("move", help="a face filed under the wrong person goes to another")
    q.add_argument("face", type=int)
    q.add_argument("--from", dest="identity", required=True, help="the identity it is filed under")
    q.add_argument("--to", required=True, help="the identity it shows")
    model_flag(q, "the gallery's model")
    store_flags(q)
    q.set_defaults(run=gallery_fix)
    q = actions.add_parser("distinct", help="FIRST and SECOND are different people: never listed as one again, "
                                            "and their scores count as a non-match when calibrating")
    q.add_argument("first")
    q.add_argument("second")
    model_flag(q, "the gallery's model")
    store_flags(q)
    q.set_defaults(run=gallery_fix)

    p = sub.add_parser("cluster", help="group the gallery's unlabelled faces into candidate people (a Ray job)")
    store_flags(p)
    p.add_argument("--k", type=int, default=20, help="neighbours searched per face (default %(default)s)")
    p.add_argument("--threshold", type=float,
                   help="cosine similarity an edge needs (default: read from the faces' own neighbour scores, "
                        "where strangers end and the same person begins; with too few faces for that, the "
                        "gallery's calibration, else the model's threshold)")
    p.add_argument("--method", default=METHODS[0], choices=METHODS,
                   help="graph clustering (default %(default)s; docs/BENCHMARKS.md compares them)")
    p.add_argument("--export", help="also write one Parquet row per face: its cluster, size, cohesion, "
                                    "representative face")
    p.add_argument("--concurrency", type=int, default=2, help="search actors (Milvus server only)")
    ray_flag(p)
    p.set_defaults(run=cluster)

    p = sub.add_parser("clusters", help="the last clustering's clusters: list (largest first) or show one")
    p.add_argument("action", choices=["list", "show"])
    p.add_argument("cluster", nargs="?", type=int, help="show: the cluster id")
    store_flags(p)
    p.add_argument("--min-size", type=int, default=2, help="list: smallest cluster shown (default %(default)s)")
    p.add_argument("--limit", type=int, default=50, help="list: clusters shown (default %(default)s)")
    p.set_defaults(run=clusters)


def gallery_check(args: argparse.Namespace) -> int:
    """Every labelled face's vector is read: the findings are the gallery's, not a sample's."""
    from indexer.health import check_index
    from indexer.store import FaceIndex

    settings = settings_from(args)
    galleries = open_gallery(settings)
    name = galleries.serving()
    if name is None:
        raise NotFound(f"gallery {settings.collection!r} does not exist; ingest or enroll faces first")
    found = check_index(FaceIndex(galleries.client, name))
    print(json.dumps(asdict(found), default=str) if args.json else "\n".join(found.lines()))
    return EXIT_OK


def gallery_fix(args: argparse.Namespace) -> int:
    """merge, move and distinct: what the review page's health section does, audited as the API's are."""
    from jobs.curation import Curator
    from jobs.service import IdentityService

    settings = settings_from(args)
    service = IdentityService.open(settings)
    try:
        curator = Curator(service, None)
        if args.action == "merge":
            merged = curator.merge_identities(args.into, args.other)
            audit(settings, "merge_identity", identity=args.into, merged_from=args.other,
                  face_ids=[str(f) for f in merged.face_ids])
            print(f"{len(merged.face_ids)} faces of {args.other!r} are now {args.into!r}'s"
                  + "".join(f"\n  left: face {s['face_id']}: {s['reason']}" for s in merged.skipped))
        elif args.action == "move":
            moved = curator.move_face(args.identity, args.face, args.to)
            audit(settings, "move_face", identity=args.identity, moved_to=args.to, face_ids=[str(args.face)])
            print(f"face {args.face} is now {moved.identity!r}'s (and not {args.identity!r})")
        else:
            found = curator.different_people(args.first, args.second)
            audit(settings, "distinct", identity=args.first, other=args.second)
            print(f"{args.first!r} and {args.second!r} are different people ({len(found)} such pair(s) kept)")
    finally:
        service.close()
    return EXIT_OK


def calibrate(args: argparse.Namespace) -> int:
    from indexer import calibration
    from indexer.store import FaceIndex
    from jobs.calibration_plot import plot
    from jobs.calibration_watch import count_identities

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
        if found is not None and args.plot:
            plot(found, args.plot, f"{name}: FPIR target {found.target_fpir}")
        if args.json:
            print(json.dumps({**asdict(found), "status": found.status(count_identities(index))} if found else None))
        elif found is not None:
            print("\n".join(found.lines() + found.growth_lines(count_identities(index))))
        else:
            print(f"{name}: no gallery calibration; the model's threshold {index.info().threshold} applies")
        return EXIT_OK
    if args.clear:
        calibration.store(index, None)
        audit(settings, "calibration_clear", collection=name)
        print(f"{name}: gallery calibration cleared; the model's threshold {index.info().threshold} applies")
        return EXIT_OK
    result = calibration.calibrate(index, args.fpir, model_threshold=index.info().threshold, sample=args.sample,
                                   method=args.method)
    if not args.dry_run:
        calibration.store(index, result)
        audit(settings, "calibrate", collection=name, threshold=result.threshold, target_fpir=args.fpir)
    if args.plot:
        plot(result, args.plot, f"{name}: FPIR target {args.fpir}")
    if args.json:
        print(json.dumps(asdict(result)))
    else:
        print("\n".join([f"{name}:", *result.lines(),
                         "(dry run: nothing kept)" if args.dry_run else "kept with the collection: searches use it"]))
    return EXIT_OK


def cluster(args: argparse.Namespace) -> int:
    from jobs.pipelines.cluster import cluster as run_cluster
    from jobs.runtime import init_ray

    settings = settings_from(args)
    init_ray(settings.ray_address)
    summary = run_cluster(milvus=settings.milvus_uri, token=settings.token(), gallery=settings.collection,
                          root=archive_root(settings, CLUSTERS_BESIDE), k=args.k, threshold=args.threshold,
                          method=args.method, export_parquet=args.export, concurrency=args.concurrency,
                          console=Console())
    print("\n".join(summary.lines()))
    audit(settings, "cluster", collection=summary.collection, run=summary.run, clusters=summary.clusters)
    return EXIT_OK


def clusters(args: argparse.Namespace) -> int:
    from indexer.clusters import ClusterStore

    settings = settings_from(args)
    name = open_gallery(settings).serving()
    if name is None:
        raise NotFound(f"gallery {settings.collection!r} does not exist")
    run = ClusterStore(archive_root(settings, CLUSTERS_BESIDE), settings.collection, name).latest()
    if run is None:
        raise NotFound(f"gallery {settings.collection!r} has not been clustered yet: run `arcmatch cluster`")
    if args.action == "show":
        if args.cluster is None:
            raise BadInput("clusters show needs a cluster id (see `arcmatch clusters list`)")
        info = next((c for c in run.clusters if c.cluster == args.cluster), None)
        if info is None:
            raise NotFound(f"no cluster {args.cluster} in the last run")
        print(f"cluster {info.cluster}: {info.size} faces, cohesion {info.cohesion:.3f}, "
              f"representative face {info.representative}")
        print("\n".join(str(f) for f in run.members(info.cluster)))
        return EXIT_OK
    shown = [c for c in run.clusters if c.size >= args.min_size][: args.limit]
    for c in shown:
        print(f"{c.cluster}\t{c.size} faces\tcohesion {c.cohesion:.3f}\trepresentative {c.representative}")
    total = sum(1 for c in run.clusters if c.size >= args.min_size)
    print(f"({len(shown)} of {total} clusters of {args.min_size} faces or more; run {run.name})")
    return EXIT_OK
