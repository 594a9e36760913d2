"""`arcmatch cluster` and `arcmatch clusters`: the gallery's unlabelled faces grouped into candidate people, so that
faces nobody has named can be reviewed a person at a time. `cluster` runs as a Ray job over the vectors in the store
and keeps each run beside the face archive; `clusters` reads the last run back, a list largest first or one cluster's
faces.
"""

from __future__ import annotations

import argparse

from common.errors import EXIT_OK, BadInput, NotFound
from common.names import counted, shown
from indexer.clustering import METHODS
from jobs.cli.options import (
    archive_root,
    audit,
    cosine,
    job_console,
    left_out,
    model_flag,
    open_gallery,
    positive,
    ray_flag,
    settings_from,
    store_flags,
)

CLUSTERS_BESIDE = "clustering keeps its runs beside it"


def register(sub) -> None:
    p = sub.add_parser("cluster", help="group the gallery's unlabelled faces into candidate people (a Ray job)")
    store_flags(p)
    p.add_argument("--k", type=int, default=20, help="neighbours searched per face (default %(default)s)")
    p.add_argument("--threshold", type=cosine,
                   help="cosine similarity an edge needs (default: read from the faces' own neighbour scores, "
                        "where strangers end and the same person begins, and for connected and leiden raised to "
                        "where their clusters agree best with chinese-whispers'; with too few faces for that, the "
                        "gallery's calibration, else the model's threshold)")
    p.add_argument("--method", default=METHODS[0], choices=METHODS,
                   help="graph clustering (default %(default)s; docs/BENCHMARKS.md compares them)")
    p.add_argument("--export", help="also write one Parquet row per face: its cluster, size, cohesion, "
                                    "representative face")
    p.add_argument("--concurrency", type=int, default=2, help="search actors (Milvus server only)")
    p.add_argument("--ray-from", type=int, metavar="FACES",
                   help="search with Ray actors from this many faces on (Milvus server only; below it the command "
                        "searches by itself, as actors take longer to start than a small gallery takes to search; "
                        "default 20,000)")
    ray_flag(p)
    p.set_defaults(run=cluster)

    p = sub.add_parser("clusters", help="the last clustering's clusters: list (largest first), show one, or name "
                                        "one (its faces become an identity's)")
    p.add_argument("action", choices=["list", "show", "name"])
    p.add_argument("cluster", nargs="?", type=int, help="show, name: the cluster id")
    p.add_argument("identity", nargs="?", help="name: who the cluster's faces are (new or enrolled)")
    p.add_argument("--proceed", action="store_true", help="name: also faces that match another identity, or were "
                                                          "rejected from this one")
    p.add_argument("--members", metavar="KEY", help="name: the cluster's members as `list` or `show` printed them; "
                                                    "refused if it holds other faces now (clustered again since)")
    model_flag(p, "name: the gallery's model")
    store_flags(p)
    p.add_argument("--min-size", type=positive, default=2,
                   help="list: smallest cluster shown (default %(default)s)")
    p.add_argument("--limit", type=positive, default=50, help="list: clusters shown (default %(default)s)")
    p.set_defaults(run=clusters)


def cluster(args: argparse.Namespace) -> int:
    from jobs.pipelines.cluster import cluster as run_cluster
    from jobs.runtime import init_ray

    settings = settings_from(args)
    init_ray(settings.ray_address)
    with job_console(settings, "cluster") as console:
        summary = run_cluster(milvus=settings.milvus_uri, token=settings.token(), gallery=settings.gallery,
                              root=archive_root(settings, CLUSTERS_BESIDE), k=args.k, threshold=args.threshold,
                              method=args.method, export_parquet=args.export, concurrency=args.concurrency,
                              ray_from=args.ray_from, console=console)
        console.finish(summary)
    print("\n".join(summary.lines()))
    audit(settings, "cluster", collection=summary.collection, run=summary.run, clusters=summary.clusters)
    return EXIT_OK


def _members(settings, collection: str, faces: list[int]) -> None:
    """A cluster's faces, each with the photo it came from (what a person needs to say who it is), and what became
    of those named or deleted since the run."""
    from indexer.store import FaceIndex

    rows = FaceIndex(open_gallery(settings).client, collection).rows(faces)
    for face in faces:
        row = rows.get(face)
        now = "deleted since" if row is None else f"named {shown(row.identity)} since" if row.identity else ""
        box = ((row.metadata or {}).get("face") or {}).get("box") if row is not None else None
        where = f"\tbox {','.join(str(round(v)) for v in box)}" if box else ""  # two faces of one photo apart
        print(f"{face}\t{row.source if row is not None else ''}{where}" + (f"\t({now})" if now else ""))


def clusters(args: argparse.Namespace) -> int:
    from indexer.cluster_store import ClusterStore
    from jobs.curation import members_key

    settings = settings_from(args)
    name = open_gallery(settings).serving()
    if name is None:
        raise NotFound(f"gallery {settings.gallery!r} does not exist")
    run = ClusterStore(archive_root(settings, CLUSTERS_BESIDE), settings.gallery, name).latest()
    if run is None:
        raise NotFound(f"gallery {settings.gallery!r} has not been clustered yet: run `arcmatch cluster`")
    if args.action == "name":
        return _name(args, settings, name)
    if args.action == "show":
        if args.cluster is None:
            raise BadInput("clusters show needs a cluster id (see `arcmatch clusters list`)")
        info = next((c for c in run.clusters if c.cluster == args.cluster), None)
        if info is None:
            raise NotFound(f"no cluster {args.cluster} in the last run")
        print(f"cluster {info.cluster}: {counted(info.size, 'face')}, cohesion {info.cohesion:.3f}, "
              f"representative face {info.representative}, members {members_key(run.members(info.cluster))}")
        _members(settings, name, [int(f) for f in run.members(info.cluster)])
        return EXIT_OK
    shown = [c for c in run.clusters if c.size >= args.min_size][: args.limit]
    for c in shown:
        print(f"{c.cluster}\t{counted(c.size, 'face')}\tcohesion {c.cohesion:.3f}\trepresentative {c.representative}\t"
              f"members {members_key(run.members(c.cluster))}")
    total = sum(1 for c in run.clusters if c.size >= args.min_size)
    print(f"({len(shown)} of {total} clusters of {args.min_size} faces or more; run {run.name})")
    return EXIT_OK


def _name(args: argparse.Namespace, settings, collection: str) -> int:
    """The cluster's faces become `identity`'s, as the review page's "name this group" does (jobs/curation.py):
    faces rejected from that identity or named since the run are left, and said."""
    from indexer.cluster_store import ClusterStore
    from jobs.curation import Curator
    from jobs.service import IdentityService

    if args.cluster is None or not args.identity:
        raise BadInput("clusters name needs a cluster id and a name: `arcmatch clusters name 12 \"Ann Lee\"`")
    service = IdentityService.open(settings)
    try:
        store = ClusterStore(archive_root(settings, CLUSTERS_BESIDE), settings.gallery, collection)
        named = Curator(service, store).promote(args.cluster, args.identity, proceed=args.proceed,
                                                seen=args.members)
    finally:
        service.close()
    audit(settings, "promote", identity=named.identity, cluster=args.cluster, face_ids=[str(f) for f in named.face_ids])
    print(f"{len(named.face_ids)} face(s) of cluster {args.cluster} named {named.identity!r}"
          + left_out(named.skipped))
    return EXIT_OK
