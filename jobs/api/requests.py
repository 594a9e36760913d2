"""Every request's id, and the logs as JSON lines on request (ARCMATCH_LOG_FORMAT=json).

Why: an operator who sees one failed request in a client's report, one line in the logs and one record in the
audit trail needs the three tied together. Each request gets an id (the caller's `X-Request-ID` when it is a
sane one, else a fresh one), answered in the `X-Request-ID` header, written into the audit record and into every
log line emitted while the request is served (uvicorn's access line included: it is written from the request's
own task). JSON lines are what log collectors (Loki, Elasticsearch, Cloud Logging) parse without a pattern.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import time
import uuid

from jobs.api.asgi import HttpMiddleware, at_start, with_headers

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("arcmatch_request_id", default=None)
STATE_KEY = "request_id"
_SANE = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")  # a caller's id is kept only if it cannot forge a log line


class RequestIds(HttpMiddleware):
    """The outermost middleware: the id in the scope's state, the context and the answer."""

    async def http(self, scope, receive, send) -> None:
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _SANE.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})[STATE_KEY] = request_id
        token = REQUEST_ID.set(request_id)
        header = [(b"x-request-id", request_id.encode("latin-1"))]
        try:
            await self.app(scope, receive, at_start(send, lambda message: with_headers(message, header)))
        finally:
            REQUEST_ID.reset(token)


class JsonLines(logging.Formatter):
    """One JSON object a line: time (UTC, ISO 8601), level, logger, message, the request's id where there is one,
    and the traceback as one string."""

    def format(self, record: logging.LogRecord) -> str:
        line = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
                "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        if (request_id := REQUEST_ID.get()) is not None:
            line["request_id"] = request_id
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def log_config(log_format: str, level: str = "INFO") -> dict | None:
    """uvicorn's `log_config` for `log_format` ("json": every logger, uvicorn's access log included, as JSON
    lines on stderr); None keeps uvicorn's own text format."""
    if log_format != "json":
        return None
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    return {"version": 1, "disable_existing_loggers": False,
            "formatters": {"json": {"()": "jobs.api.requests.JsonLines"}},
            "handlers": {"json": handler},
            "root": {"handlers": ["json"], "level": level},
            "loggers": {name: {"handlers": ["json"], "level": level, "propagate": False}
                        for name in ("uvicorn", "uvicorn.error", "uvicorn.access")}}
