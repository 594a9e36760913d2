"""The HTTP app (FastAPI, versioned under /v1, OpenAPI at /docs): middleware, error handlers and routers.

Every route but /v1/health needs an API key (header `X-API-Key`) with the read, write or admin scope. Every face
route serves the default gallery at /v1/... and any gallery at /v1/galleries/{gallery}/... (jobs/api/access.py).
Errors are JSON `{"error": kind, "detail": reason}` (jobs/api/errors.py); a 4xx says what the caller got wrong
and nothing ever carries a stack trace.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware

from common.errors import BadInput, Unavailable
from indexer.ids import FLOAT32_MAX
from jobs.api import errors
from jobs.api.access import PREFIX
from jobs.api.auditing import Audit
from jobs.api.galleries import GalleryServices
from jobs.api.gallery_schemas import GalleryName
from jobs.api.guard import BodyLimits, Guard, SecurityHeaders
from jobs.api.keys import parse_keys
from jobs.api.metrics import RequestMetrics, observe_milvus
from jobs.api.parameters import known_parameters
from jobs.api.requests import RequestIds
from jobs.api.routes import calibration, clusters, galleries, gallery, health, identities, metrics, page, search
from jobs.api.scopes import ScopeTable
from jobs.api.slashes import EncodedSlashes
from jobs.api.timing import ServerTiming
from jobs.audit import AuditLog
from jobs.service import IdentityService
from jobs.settings import Settings

Provider = Callable[[], tuple[IdentityService, Any]]
REOPEN_EVERY_S = 2.0  # how often a service that could not reach its store tries again (a request asks)
log = logging.getLogger("arcmatch.api")


def app_from_environment() -> FastAPI:
    """The app of one `arcmatch serve --workers N` process: its settings are the ARCMATCH_* environment."""
    return create_app(Settings.load())


def create_app(settings: Settings, provider: Provider | None = None) -> FastAPI:
    """The app. `provider` returns (service, batcher or None); by default one service is built from the settings.

    The Ray Serve deployment passes a provider that returns its replica's own service and batcher.
    """
    keys = parse_keys(settings.require("model", "api_keys").api_keys.get_secret_value())
    if not keys:
        raise BadInput("ARCMATCH_API_KEYS holds no key: create one with `arcmatch apikey NAME`")
    if provider is None:
        provider = opened_when_reachable(settings)

    audit_log = AuditLog(settings.audit_root(), retention_days=settings.audit_retention_days)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        audit_log.close()  # its day's file, open for appends; a write after this opens it again

    app = FastAPI(title="arcmatch", version="1", description="One-shot face identity lookup.", lifespan=lifespan)
    app.state.settings, app.state.keys, app.state.provider = settings, keys, provider
    app.state.galleries = GalleryServices(settings, provider)
    app.state.decode_slots = asyncio.Semaphore(settings.decode_concurrency)  # see Searcher.faces
    app.state.cluster_stores = {}  # one per collection, for the app's life (jobs/api/deps.py)
    errors.install(app)
    # added innermost first: the security headers wrap everything, the Guard sits right in front of the routes
    limits = BodyLimits(settings.max_upload_bytes, settings.max_images_per_request, settings.max_json_bytes)
    scopes = ScopeTable(app)  # each route's scope, from its own key dependency (jobs/api/scopes.py)
    app.add_middleware(Guard, keys=keys, scopes=scopes, limits=limits, timeout_s=settings.request_timeout_s,
                       default_gallery=settings.gallery)
    app.add_middleware(Audit, audit_log=audit_log,
                       scopes=scopes, searches=settings.audit_searches, gallery=settings.gallery)
    if settings.metrics:
        app.add_middleware(RequestMetrics, scopes=scopes)  # inside ServerTiming: it reads the phases collected there
        observe_milvus()
    app.add_middleware(ServerTiming)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST", "DELETE"],
                           allow_headers=["X-API-Key", "Content-Type", "X-Request-ID"],
                           expose_headers=["Server-Timing", "Retry-After", "X-Request-ID"])
    app.add_middleware(SecurityHeaders)
    app.add_middleware(RequestIds)  # every answer carries its id, refusals by the Guard included
    app.add_middleware(EncodedSlashes)  # outermost: the Guard, the audit and the metrics route the path it gives
    checked = [Depends(known_parameters)]  # a parameter a route does not take is refused, never ignored
    app.include_router(health.router, dependencies=checked, responses=errors.responses(400, 415))
    app.include_router(galleries.router, dependencies=checked, responses=errors.responses(400, 415))
    for router in (search.router, identities.router, identities.faces_router, clusters.router, calibration.router,
                   gallery.router):  # every face route: the default gallery's, and any gallery's by name
        # 404 on both: a key that does not reach the gallery (the default one included) is told it is not there
        app.include_router(router, prefix="/v1", dependencies=checked, responses=errors.responses(400, 404, 415))
        app.include_router(router, prefix=PREFIX + "/{gallery}", dependencies=[Depends(_named_gallery), *checked],
                           responses=errors.responses(400, 404, 415))
    app.include_router(page.router)
    if settings.metrics:
        app.include_router(metrics.router)
    _document_limits(app, settings)
    return app


def _named_gallery(gallery: GalleryName) -> None:
    """Declares the path's gallery (the OpenAPI document lists it); jobs/api/deps.py reads it from the path."""


def _document_limits(app: FastAPI, settings: Settings) -> None:
    """What the generated OpenAPI document cannot know by itself: the model's dimension and the request limits,
    so that a client (or a contract test) sees every rule the service enforces."""
    generate = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = generate()
            dim = app.state.provider()[0].embedder.spec.embedding_size
            parts = schema["components"]["schemas"]
            embeddings = parts["EmbeddingQuery"]["properties"]["embeddings"]
            embeddings["maxItems"] = settings.max_batch_vectors
            embeddings["items"].update(minItems=dim, maxItems=dim, contains={"not": {"const": 0}})
            embeddings["items"]["items"].update(minimum=-FLOAT32_MAX, maximum=FLOAT32_MAX)
            for name, part in parts.items():
                if name.startswith("Body_enroll"):  # the default gallery's and the named galleries' routes
                    part["properties"]["images"]["maxItems"] = settings.max_images_per_request
                if name.startswith("Body_"):  # a form's fields: one a route does not take is refused (parameters)
                    part["additionalProperties"] = False
        return app.openapi_schema

    app.openapi = openapi


def opened_when_reachable(settings: Settings, every_s: float = REOPEN_EVERY_S) -> Provider:
    """The default gallery's service, opened now, or, where the store cannot be reached yet, on a later request:
    a service started before its Milvus (a deployment's pods in any order, a Milvus restarting) answers /v1/health,
    says 503 with Retry-After on the rest, and serves once the store answers, without a restart. A QA pass started
    `arcmatch serve` with Milvus down: one worker exited, and two were started again and again, answering nothing.
    Any other failure (a bad model, a bad setting) stops the start as before. Tried at most every `every_s`, by one
    request at a time."""
    lock, state = threading.Lock(), {"built": None, "tried": 0.0, "error": None}

    def attempt() -> None:
        try:
            state["built"] = (build_service(settings), None)
        except Unavailable as exc:
            state["error"], state["tried"] = exc, time.monotonic()

    attempt()
    if state["built"] is None:
        log.warning("the face store cannot be reached yet (%s): answering 503 until it can", state["error"])

    def provider() -> tuple[IdentityService, Any]:
        if state["built"] is None:
            with lock:
                if state["built"] is None and time.monotonic() - state["tried"] >= every_s:
                    attempt()
            if state["built"] is None:
                raise state["error"]
        return state["built"]

    return provider


def build_service(settings: Settings) -> IdentityService:
    service = IdentityService.open(settings, create=True)
    # Everything loaded so far (the model's runtime, pymilvus: about half a million objects with torch) lives as
    # long as the process. Frozen, the cyclic GC's full passes skip it; otherwise each one scans it all and stalls
    # whichever request triggered it for 100-200 ms, the API's p99 at 1M faces (docs/BENCHMARKS.md).
    gc.collect()
    gc.freeze()
    return service
