"""The HTTP API (FastAPI, versioned under /v1, OpenAPI at /docs). Routes are thin: jobs/service.py does the work.

Every route but /v1/health needs an API key (header `X-API-Key`) with the read or write scope. Errors are JSON
`{"error": kind, "detail": reason}` with a 4xx status for the caller's mistakes and never carry a stack trace.
"""


import asyncio
import contextvars
import gc
import json
import logging
import time
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, File, Form, Header, HTTPException, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from indexer.decision import Decision
from jobs.apikeys import ApiKey, authenticate, parse_keys
from jobs.errors import classify
from jobs.service import IdentityService
from jobs.settings import Settings

log = logging.getLogger("arcmatch.api")
if not log.handlers:  # under Ray Serve the root logger has no handler: keep tracebacks in the replica's log
    log.addHandler(logging.StreamHandler())
_PHASES: contextvars.ContextVar[dict[str, float]] = contextvars.ContextVar("arcmatch_phases")


# The app's closures reach the context variable through these module functions: Ray Serve pickles the app, and a
# function is pickled by reference where a ContextVar cannot be pickled at all.
def _start_phases() -> dict[str, float]:
    phases: dict[str, float] = {}
    _PHASES.set(phases)
    return phases


def _record_phase(name: str, seconds: float) -> None:
    _PHASES.get({})[name] = seconds


class ServerTiming:
    """Time inside the app, and within it the search call, as a Server-Timing header: tells a slow answer's
    network from its work, and the work from waiting on the search.

    A plain ASGI middleware, not `@app.middleware("http")`: that one (Starlette's BaseHTTPMiddleware) runs every
    request's app in a task of its own and passes the response through memory streams, CPU time that on a small
    machine is taken from the Milvus server's search (docs/BENCHMARKS.md).
    """

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, phases = time.perf_counter(), _start_phases()

        async def send_timed(message) -> None:
            if message["type"] == "http.response.start":
                timings = [f"app;dur={1000 * (time.perf_counter() - started):.2f}"]
                timings += [f"{name};dur={1000 * seconds:.2f}" for name, seconds in phases.items()]
                header = (b"server-timing", ", ".join(timings).encode("latin-1"))
                message = {**message, "headers": [*message.get("headers", []), header]}
            await send(message)

        await self.app(scope, receive, send_timed)


class CandidateOut(BaseModel):
    identity: str
    score: float
    face_ids: list[str]


class DecisionOut(BaseModel):
    match: bool
    identity: str | None
    score: float = Field(description="cosine similarity of the best identity; higher is closer")
    threshold: float
    candidates: list[CandidateOut]

    @classmethod
    def of(cls, d: Decision) -> "DecisionOut":
        return cls(match=d.is_match, identity=d.identity, score=d.score, threshold=d.threshold,
                   candidates=[CandidateOut(identity=c.identity, score=c.score, face_ids=[str(f) for f in c.face_ids])
                               for c in d.candidates])


class EmbeddingQuery(BaseModel):
    embeddings: list[list[float]] = Field(min_length=1)
    threshold: float | None = Field(default=None, ge=-1.0, le=1.0)
    k: int | None = Field(default=None, ge=1, le=1000)
    top_n: int = Field(default=1, ge=1, le=100)


class TooLarge(ValueError):
    """An upload over the size limit (HTTP 413)."""


def create_app(settings: Settings, provider: Callable[[], tuple[IdentityService, Any]] | None = None) -> FastAPI:
    """The app. `provider` returns (service, batcher or None); by default one service is built from the settings.

    The Ray Serve deployment passes a provider that returns its replica's own service and batcher.
    """
    keys = parse_keys(settings.api_keys.get_secret_value())
    if not keys:
        raise ValueError("ARCMATCH_API_KEYS holds no key: create one with `arcmatch apikey NAME`")
    if provider is None:
        built = (build_service(settings), None)

        def provider() -> tuple[IdentityService, Any]:
            return built
    app = FastAPI(title="arcmatch", version="1", description="One-shot face identity lookup.")

    def require(scope: str):
        def check(x_api_key: Annotated[str | None, Header()] = None) -> ApiKey:
            key = authenticate(x_api_key, keys)
            if key is None:
                raise HTTPException(401, "missing or unknown API key (header X-API-Key)")
            if scope not in key.scopes:
                raise HTTPException(403, f"API key {key.name!r} lacks the {scope!r} scope")
            return key
        return Depends(check)

    ReadKey = Annotated[ApiKey, require("read")]  # noqa: N806  (dependency aliases read like types)
    WriteKey = Annotated[ApiKey, require("write")]  # noqa: N806

    async def read_upload(upload: UploadFile) -> bytes:
        data = await upload.read(settings.max_upload_bytes + 1)
        if len(data) > settings.max_upload_bytes:
            raise TooLarge(f"{upload.filename or 'upload'} is over the {settings.max_upload_bytes} byte limit")
        return data

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        kind = {401: "unauthorized", 403: "forbidden", 404: "not found"}.get(exc.status_code, "bad request")
        return JSONResponse({"error": kind, "detail": exc.detail}, status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return JSONResponse({"error": "bad request", "detail": problems}, status_code=422)

    async def known_error(request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, TooLarge):
            return JSONResponse({"error": "too large", "detail": str(exc)}, status_code=413)
        _, status, kind = classify(exc)
        if status == 500:  # a builtin error that is none of ours: a bug, so no detail leaves the service
            return await internal_error(request, exc)
        return JSONResponse({"error": kind, "detail": str(exc)}, status_code=status)

    # our errors derive from these builtins (jobs/errors.py); registering them here answers without re-raising
    for category in (ValueError, LookupError, ConnectionError):
        app.add_exception_handler(category, known_error)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.error("request %s %s failed", request.method, request.url.path, exc_info=exc)
        return JSONResponse({"error": "internal error", "detail": "the service could not complete the request"},
                            status_code=500)

    app.add_middleware(ServerTiming)

    @app.get("/v1/health")
    def health() -> dict:
        return {"status": "ok"}

    async def search(vectors, threshold: float | None, k: int | None, top_n: int) -> list[Decision]:
        service, batcher = provider()
        vectors = service.check_vectors(vectors)
        if batcher is None:  # off the event loop, so slow searches do not stall other requests
            started = time.perf_counter()
            found = await asyncio.to_thread(service.search_vectors, vectors, threshold, k, top_n)
            _record_phase("search", time.perf_counter() - started)
            return found
        query = (service.threshold(threshold), k or service.k, top_n)
        return list(await asyncio.gather(*(batcher.search((v, *query)) for v in vectors)))

    @app.get("/v1/ready")
    def ready(_: ReadKey) -> dict:
        return {"status": "ready", **provider()[0].ready()}

    @app.post("/v1/search", response_model=DecisionOut)
    async def search_image(_: ReadKey, image: Annotated[UploadFile, File()],
                           threshold: Annotated[float | None, Form(ge=-1.0, le=1.0)] = None,
                           k: Annotated[int | None, Form(ge=1, le=1000)] = None,
                           top_n: Annotated[int, Form(ge=1, le=100)] = 1):
        service, batcher = provider()
        pixels = service.decode(await read_upload(image))
        if batcher is not None:
            vector = await batcher.embed(pixels)
        else:
            vector = (await asyncio.to_thread(service.embedder.embed, pixels[None]))[0]
        return DecisionOut.of((await search(vector, threshold, k, top_n))[0])

    @app.post("/v1/search/embedding", response_model=list[DecisionOut])
    async def search_embedding(_: ReadKey, query: EmbeddingQuery):
        if len(query.embeddings) > settings.max_batch_vectors:
            raise HTTPException(400, f"at most {settings.max_batch_vectors} embeddings per request")
        return [DecisionOut.of(d) for d in await search(query.embeddings, query.threshold, query.k, query.top_n)]

    @app.post("/v1/identities/{identity}/faces", status_code=201)
    async def enroll(_: WriteKey, identity: str, images: Annotated[list[UploadFile], File()],
                     metadata: Annotated[str | None, Form()] = None) -> dict:
        extra = json.loads(metadata) if metadata else None
        if extra is not None and not isinstance(extra, dict):
            raise HTTPException(400, "metadata must be a JSON object")
        uploads = [(u.filename or f"image{i}", await read_upload(u)) for i, u in enumerate(images)]
        enrolled = provider()[0].enroll(identity, uploads, extra)
        return {"identity": enrolled.identity, "face_ids": [str(f) for f in enrolled.face_ids]}

    @app.get("/v1/identities/{identity}")
    def get_identity(_: ReadKey, identity: str) -> dict:
        faces = provider()[0].identity(identity)
        if not faces:
            raise HTTPException(404, f"no identity {identity!r}")
        return {"identity": identity, "faces": [
            {"face_id": str(f["id"]), "source": f["source"], "created_at": f["created_at"],
             "model_version": f["model_version"], "metadata": f["metadata"]} for f in faces]}

    @app.delete("/v1/identities/{identity}")
    def delete_identity(_: WriteKey, identity: str) -> dict:
        deleted = provider()[0].delete_identity(identity)
        if not deleted:
            raise HTTPException(404, f"no identity {identity!r}")
        return {"identity": identity, "deleted_faces": deleted}

    @app.delete("/v1/identities/{identity}/faces/{face}")
    def delete_face(_: WriteKey, identity: str, face: int) -> dict:
        if not provider()[0].delete_face(identity, face):
            raise HTTPException(404, f"identity {identity!r} has no face {face}")
        return {"identity": identity, "deleted_face": str(face)}

    @app.get("/v1/identities")
    def list_identities(_: ReadKey, cursor: str | None = None,
                        limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict:
        page, next_cursor = provider()[0].list_identities(cursor, limit)
        return {"identities": [{"identity": name, "faces": n} for name, n in page], "next_cursor": next_cursor}

    return app


def build_service(settings: Settings) -> IdentityService:
    from embedder.embed import open_embedder
    from indexer.store import CollectionInfo, FaceIndex, connect

    embedder = open_embedder(settings.model)
    token = settings.milvus_token.get_secret_value() if settings.milvus_token else None
    index = FaceIndex(connect(settings.milvus_uri, token), settings.collection,
                      consistency=settings.search_consistency, search_ef=settings.search_ef)
    spec, calibration = embedder.spec, embedder.calibration
    index.ensure(CollectionInfo(spec.version, spec.embedding_size, calibration.threshold if calibration else None,
                                spec.to_dict()))
    service = IdentityService(embedder, index, k=settings.search_k, max_pixels=settings.max_pixels)
    # Everything loaded so far (torch, timm, the model, pymilvus: about half a million objects) lives as long as
    # the process. Frozen, the cyclic GC's full passes skip it; otherwise each one scans it all and stalls
    # whichever request triggered it for 100-200 ms, the API's p99 at 1M faces (docs/BENCHMARKS.md).
    gc.collect()
    gc.freeze()
    return service
