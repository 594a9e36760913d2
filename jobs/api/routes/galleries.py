"""Galleries as a resource: list the ones a key reaches, make one, read one, erase one (the API's side of
`arcmatch galleries`, with the same rule: jobs/gallery_admin.py).

Making and erasing need the admin scope. An admin key limited to some galleries makes only those; every route
here answers a gallery the key does not reach as not found (jobs/api/access.py).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from common.errors import BadInput, Conflict, Forbidden
from jobs import gallery_admin
from jobs.api.auditing import note
from jobs.api.deps import AdminKey, ReadKey
from jobs.api.errors import responses
from jobs.api.gallery_schemas import (
    GalleryCursor,
    GalleryDetail,
    GalleryErased,
    GalleryIn,
    GalleryList,
    GalleryName,
    GalleryOut,
)
from jobs.api.schemas import Ready

router = APIRouter(prefix="/v1/galleries", tags=["galleries"], responses=responses(401, 403, 503))


def _client(request: Request):
    return request.app.state.galleries.default()[0].galleries.client


def _out(request: Request, found: gallery_admin.Summary) -> GalleryOut:
    return GalleryOut(name=found.gallery, model_version=found.model_version, target_fpir=found.target_fpir,
                      faces=found.faces, default=found.gallery == request.app.state.settings.gallery)


def _summary(request: Request, name: str) -> GalleryOut:
    return _out(request, gallery_admin.summary(_client(request), name))


@router.get("", responses=responses(422))
def list_galleries(key: ReadKey, request: Request,
                   cursor: GalleryCursor = None,
                   limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> GalleryList:
    """The galleries of the store that this key reaches, a page at a time."""
    page, next_cursor = gallery_admin.summaries(_client(request), cursor or None, limit, key.reaches)
    return GalleryList(galleries=[_out(request, found) for found in page], next_cursor=next_cursor)


@router.post("", name="gallery_create", status_code=201, responses=responses(400, 409, 422))
def create(key: AdminKey, request: Request, body: GalleryIn) -> GalleryOut:
    """An empty gallery served by this service's model; enroll into it under /v1/galleries/{gallery}/."""
    from indexer.galleries import check_gallery

    name = check_gallery(body.name)
    if not key.reaches(name):  # said before anything is looked up, so it tells nothing of other galleries
        raise Forbidden(f"API key {key.name!r} may make only the galleries it reaches")
    embedder = request.app.state.galleries.default()[0].embedder
    if body.model is not None and body.model != embedder.spec.version:
        raise BadInput(f"this service runs model {embedder.spec.version}, not {body.model}: a gallery of another "
                       "model is made by a service running it (`arcmatch galleries create NAME --model DIR`)")
    index = gallery_admin.create(_client(request), name, embedder, body.fpir)
    note(request, gallery=name, collection=index.collection)
    return _summary(request, name)


@router.get("/{gallery}", responses=responses(404))
def read(_: ReadKey, request: Request, gallery: GalleryName) -> GalleryDetail:
    service = request.app.state.galleries.get(gallery)[0]
    return GalleryDetail(**_summary(request, gallery).model_dump(), ready=Ready(status="ready", **service.ready()))


@router.get("/{gallery}/ready", responses=responses(404))
def ready(_: ReadKey, request: Request, gallery: GalleryName) -> Ready:
    """The gallery's readiness, as /v1/ready with a read key says it for the default gallery."""
    return Ready(status="ready", **request.app.state.galleries.get(gallery)[0].ready())


@router.delete("/{gallery}", name="gallery_delete", responses=responses(400, 404, 409))
def erase(_: AdminKey, request: Request, gallery: GalleryName,
          erase: Annotated[int | None, Query(ge=0, description="the number of faces the gallery holds: nothing is "
                                             "erased unless it is repeated here (a 400 says the number)")] = None
          ) -> GalleryErased:
    """Erase the gallery: every face in every collection of it, its archived images, its clusters."""
    settings = request.app.state.settings
    if gallery == settings.gallery:
        raise Conflict(f"gallery {gallery!r} is this service's default (ARCMATCH_GALLERY): erase it with "
                       "`arcmatch galleries delete` while no service runs on it")
    erased = gallery_admin.erase(_client(request), gallery, settings.archive_root(), erase, flag="erase=")
    request.app.state.galleries.forget(gallery)
    for stored in [k for k in request.app.state.cluster_stores if k[1] == gallery]:
        del request.app.state.cluster_stores[stored]
    note(request, gallery=gallery, faces=erased.faces, archived=erased.archived,
         collections=erased.collections)
    return GalleryErased(name=gallery, faces=erased.faces, archived=erased.archived, collections=erased.collections)
