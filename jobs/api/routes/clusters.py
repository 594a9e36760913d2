"""Clusters of the faces nobody has named (`arcmatch cluster`): read them, name them, split and merge them. The
work is in jobs/curation.py; a cluster's id stays what the clustering run gave it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request

from jobs.api.auditing import note
from jobs.api.deps import CuratorDep, ReadKey, WriteKey
from jobs.api.errors import responses
from jobs.api.schemas import ClusterOut, ClusterPage, MergeIn, Promoted, PromoteIn, SplitIn

router = APIRouter(prefix="/clusters", tags=["clusters"], responses=responses(401, 403, 404, 503))
ClusterId = Annotated[int, Path(ge=0, le=2**63 - 1, description="a cluster id as a listing gave it")]


@router.get("", responses=responses(422))
def list_clusters(_: ReadKey, curator: CuratorDep, offset: Annotated[int, Query(ge=0)] = 0,
                  limit: Annotated[int, Query(ge=1, le=500)] = 50,
                  min_size: Annotated[int, Query(ge=1)] = 2) -> ClusterPage:
    """Largest first; each with its representative face and a few others."""
    views, total, run = curator.clusters(offset, limit, min_size)
    return ClusterPage(clusters=[ClusterOut.of(v) for v in views], total=total, run=run)


# `:int` in the paths: a cluster id is digits, so /v1/clusters/merge is never read as a cluster (a GET of it is 405)
@router.get("/{cluster:int}", responses=responses(422))
def get_cluster(_: ReadKey, curator: CuratorDep, cluster: ClusterId) -> ClusterOut:
    return ClusterOut.of(curator.cluster(cluster))


@router.post("/{cluster:int}/promote", responses=responses(400, 409, 422))
def promote(_: WriteKey, curator: CuratorDep, request: Request, cluster: ClusterId, body: PromoteIn) -> Promoted:
    """Name the cluster's faces (or `face_ids` of them) as an identity, new or existing: they become enrolled
    faces. A face that matches another identity answers 409 naming it, unless `proceed`; so does a cluster whose
    faces are not the `members` sent."""
    ids = [int(f) for f in body.face_ids] if body.face_ids is not None else None
    named = curator.promote(cluster, body.identity, ids, proceed=body.proceed, seen=body.members)
    note(request, named.identity, cluster=cluster, face_ids=[str(f) for f in named.face_ids])
    return Promoted.of(named)


@router.post("/{cluster:int}/split", name="split_cluster", responses=responses(400, 422))
def split(_: WriteKey, curator: CuratorDep, request: Request, cluster: ClusterId, body: SplitIn) -> ClusterOut:
    """These faces leave the cluster as a cluster of their own (answered: the new one)."""
    view = curator.split(cluster, [int(f) for f in body.face_ids])
    note(request, cluster=cluster, new_cluster=view.cluster, face_ids=body.face_ids)
    return ClusterOut.of(view)


@router.post("/merge", name="merge_clusters", responses=responses(400, 422))
def merge(_: WriteKey, curator: CuratorDep, request: Request, body: MergeIn) -> ClusterOut:
    view = curator.merge(body.clusters)
    note(request, clusters=body.clusters)
    return ClusterOut.of(view)
