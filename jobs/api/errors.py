"""Every error answer of the API has one JSON shape, `{"error": kind, "detail": reason}`, mapped here once.

arcmatch's own errors (common/errors.py) answer with their status and message; FastAPI's own answers (unknown
route, wrong method, an invalid body) get the same shape; anything else is a bug: 500 with no detail from it,
and its traceback in the log.
"""

from __future__ import annotations

import functools
import logging
import re

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.routing import Match

from common.errors import ArcmatchError
from jobs.api.schemas import ErrorOut

log = logging.getLogger("arcmatch.api")
if not log.handlers:  # under Ray Serve the root logger has no handler: keep tracebacks in the replica's log
    log.addHandler(logging.StreamHandler())

RETRY_AFTER_S = 2
KIND_BY_STATUS = {400: "bad input", 401: "unauthorized", 403: "forbidden", 404: "not found",
                  405: "method not allowed", 413: "too large", 415: "unsupported media type", 422: "bad request"}


def error(status: int, kind: str, detail: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": kind, "detail": detail}, status_code=status, headers=headers)


async def arcmatch_error(request: Request, exc: ArcmatchError) -> JSONResponse:
    if exc.http_status == 500:  # the family's base itself names no cause: a bug like any other
        return await internal_error(request, exc)
    answer = error(exc.http_status, exc.kind, str(exc))
    if exc.http_status == 503:  # a backend outage: the service recovers by itself, so say when to come back
        answer.headers["Retry-After"] = str(RETRY_AFTER_S)
    return answer


async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
    headers = dict(exc.headers or {})
    if exc.status_code == 405:  # Starlette's Allow names one route's methods; a path can have several routes
        headers["Allow"] = ", ".join(allowed_methods(request))
    return error(exc.status_code, KIND_BY_STATUS.get(exc.status_code, "error"), str(exc.detail), headers or None)


def allowed_methods(request: Request) -> list[str]:
    """The methods the OpenAPI document declares for this path that a route really takes here: routers nest, so
    the document is the one list, and the router's own matching (converters included: /v1/clusters/merge is no
    cluster id) decides."""
    path = request.scope["path"]
    declared = {method.upper() for template, operations in request.app.openapi()["paths"].items()
                if _template(template).match(path) for method in operations}
    routes = request.app.router.routes
    return sorted(m for m in declared if any(route.matches({**request.scope, "method": m})[0] == Match.FULL
                                             for route in routes))


@functools.lru_cache(maxsize=256)
def _template(template: str) -> re.Pattern:
    return re.compile("^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)) + "$")


async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
    return error(422, "bad request", problems)


async def internal_error(request: Request, exc: Exception) -> JSONResponse:
    log.error("request %s %s failed", request.method, request.url.path, exc_info=exc)
    return error(500, "internal error", "the service could not complete the request")


def install(app: FastAPI) -> None:
    app.add_exception_handler(ArcmatchError, arcmatch_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, internal_error)


def responses(*statuses: int) -> dict:
    """OpenAPI declarations of the error answers a route can give, all in the ErrorOut shape."""
    kinds = {**KIND_BY_STATUS, 409: "conflict", 500: "internal error", 503: "backend unavailable"}
    return {status: {"model": ErrorOut, "description": kinds[status]} for status in statuses}
