"""The routes' dependencies, declared once as named types: a route asks for `ServiceDep`, `Searcher`, `ReadKey`
or `WriteKey` and never reaches into the app's state itself.

The app keeps its galleries in its state (jobs/api/galleries.py): the default one's (service, batcher) comes from a
`provider`, one service built from the settings for `arcmatch serve` or the replica's own service and batcher under
Ray Serve (jobs/api/serve.py); the others are opened on their first request.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated

import numpy as np
from fastapi import Depends, Header, Request, Security
from fastapi.security import APIKeyHeader

from common.errors import ArcmatchError, Forbidden, Unauthorized
from embedder.faces import NoFace, PreparedFace
from indexer.cluster_store import ClusterStore
from indexer.decision import Decision
from jobs.api import metrics
from jobs.api.access import check_reach, gallery_of
from jobs.api.guard import KEY_STATE
from jobs.api.keys import ApiKey, authenticate
from jobs.api.timing import phase
from jobs.curation import Curator
from jobs.service import PURGE_EVERY_S, IdentityService

log = logging.getLogger("arcmatch.api")


def gallery_name(request: Request) -> str:
    """The request's gallery: the one its path names, else the service's default."""
    return request.path_params.get("gallery") or request.app.state.settings.gallery


def _service(request: Request) -> IdentityService:
    return request.app.state.galleries.get(gallery_name(request))[0]


def _curator(request: Request) -> Curator:
    """Clusters and names over the gallery's collection; the clusters live beside the face archive, in one
    ClusterStore per collection for the app's life (it keeps the latest run in memory)."""
    gallery = gallery_name(request)
    service, settings = _service(request), request.app.state.settings
    root = settings.archive_root()
    if root is None:
        return Curator(service, None)
    stores = request.app.state.cluster_stores
    key = (root, gallery, service.index.collection)
    if key not in stores:
        stores[key] = ClusterStore(*key)
    return Curator(service, stores[key])


class Searcher:
    """Embedding and searching for a request: through Ray Serve's batcher when there is one, else on a worker
    thread, so a slow model call or search never stalls the event loop."""

    def __init__(self, request: Request) -> None:
        self.gallery = gallery_name(request)
        self.service, self.batcher = request.app.state.galleries.get(self.gallery)
        self.slots = request.app.state.decode_slots
        self.settings = request.app.state.settings

    async def faces(self, data: bytes, select: str) -> list[PreparedFace]:
        """Decode and find the faces off the event loop (a large photo takes tens of milliseconds of each), a few
        photos at a time (decode_slots): a 40-megapixel photo holds ~120 MB while it is worked on."""
        async with self.slots:
            with phase("decode"):
                photo = await asyncio.to_thread(self.service.photos.load, data)
            with phase("detect"):
                try:
                    return await asyncio.to_thread(self.service.photos.probe_faces, photo, select)
                except NoFace:
                    if self.settings.metrics:
                        metrics.no_face(self.gallery)
                    raise

    async def embed(self, faces: list[PreparedFace]) -> np.ndarray:
        with phase("embed"):
            if self.batcher is not None:
                return np.stack(await asyncio.gather(*(self.batcher.embed(f.chip) for f in faces)))
            return await asyncio.to_thread(self.service.photos.embed_faces, faces)

    async def threshold(self, threshold: float | None, fpir: float | None) -> float | None:
        """The caller's threshold, or the one for the caller's FPIR (read from the gallery's calibration; the
        store may be asked, so off the event loop); None leaves the choice to the service."""
        if fpir is None:
            return threshold
        return await asyncio.to_thread(self.service.lookup.threshold, threshold, fpir)

    async def threshold_source(self, threshold: float | None, fpir: float | None) -> str:
        """lookup.threshold_source, off the event loop (the gallery's calibration may be read from the store)."""
        return await asyncio.to_thread(self.service.lookup.threshold_source, threshold, fpir)

    async def search(self, vectors, threshold: float | None, k: int | None, top_n: int) -> list[Decision]:
        vectors = self.service.lookup.check_vectors(vectors)
        if self.batcher is None:
            with phase("search"):
                decisions = await asyncio.to_thread(self.service.lookup.search_checked, vectors,
                                                    [(threshold, k, top_n)] * len(vectors))
        else:
            query = (threshold, k or self.service.lookup.k, top_n)
            decisions = list(await asyncio.gather(*(self.batcher.search((v, *query)) for v in vectors)))
        if self.settings.metrics:
            metrics.decided(self.gallery, decisions)
        return decisions


    async def keep_unknown(self, data: bytes, faces: list[PreparedFace], vectors, decisions) -> list[int]:
        """The faces answered unknown, kept unlabelled (ARCMATCH_KEEP_UNKNOWN_FACES). Best effort: the answer
        stands whatever happens here, and a failure is one line in the log."""
        retention = self.settings.unknown_retention_days
        try:
            kept = await asyncio.to_thread(self.service.keep_unknown, data, faces, vectors, decisions, retention)
            await asyncio.to_thread(self.service.purge_expired, every_s=PURGE_EVERY_S)
            return kept
        except ArcmatchError as exc:
            log.warning("a search's unknown faces were not kept: %s: %s", exc.kind, exc)
            return []


# declares the key in the OpenAPI document; the Guard (jobs/api/guard.py) has checked it before the body was read
_KEY_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False, description="an API key: `arcmatch apikey NAME`")


def _require(scope: str):
    def check(request: Request, x_api_key: Annotated[str | None, Security(_KEY_HEADER)] = None) -> ApiKey:
        key = _known_key(request, x_api_key)
        if key is None:
            raise Unauthorized("missing or unknown API key (header X-API-Key)")
        check_reach(key, gallery_of(request.scope["path"], request.app.state.settings.gallery))
        if scope not in key.scopes:
            raise Forbidden(f"API key {key.name!r} lacks the {scope!r} scope")
        return key

    check.scope = scope  # the route's scope, for the Guard and the audit trail (jobs/api/scopes.py)
    return check


def _known_key(request: Request, presented: str | None) -> ApiKey | None:
    return getattr(request.state, KEY_STATE, None) or authenticate(presented, request.app.state.keys)


_OPTIONAL_KEY_HEADER = Header(alias="X-API-Key", description="optional: a key with the read scope gets the details")


def _optional_key(request: Request, x_api_key: Annotated[str | None, _OPTIONAL_KEY_HEADER] = None) -> ApiKey | None:
    """The request's key where it has a known one, else None: an open route (no security requirement in the
    OpenAPI document, so probes need none) that says more to a key holder."""
    return _known_key(request, x_api_key)


ServiceDep = Annotated[IdentityService, Depends(_service)]
OptionalKey = Annotated[ApiKey | None, Depends(_optional_key)]
CuratorDep = Annotated[Curator, Depends(_curator)]
SearchDep = Annotated[Searcher, Depends(Searcher)]
ReadKey = Annotated[ApiKey, Depends(_require("read"))]
WriteKey = Annotated[ApiKey, Depends(_require("write"))]
AdminKey = Annotated[ApiKey, Depends(_require("admin"))]
