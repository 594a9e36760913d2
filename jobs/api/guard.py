"""The edge of the API, as plain ASGI middleware: what is checked before a request costs anything.

FastAPI reads and parses a request's body before it runs a route's dependencies, so a key checked by a dependency
is checked after a 500 MiB upload has been spooled to disk. Here the key and its scope are checked from the headers
alone, the body's size is capped by the kind of route (a declared Content-Length over the cap is refused unread; a
chunked body is counted while it streams and cut off at the cap), and the whole request runs under a deadline.
The key's galleries are checked here too (jobs/api/access.py). The route dependencies (jobs/api/deps.py) then read
the key found here.

SecurityHeaders adds the headers every answer should carry: no MIME sniffing, no framing, no caching of personal
data, and a Content-Security-Policy that lets nothing load (the documentation pages get the scripts they need).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from starlette.exceptions import HTTPException

from jobs.api.access import GalleryNotFound, check_reach, gallery_of
from jobs.api.asgi import HttpMiddleware, at_start, with_headers
from jobs.api.errors import RETRY_AFTER_S, error
from jobs.api.keys import ApiKey, authenticate
from jobs.api.scopes import ScopeTable

KEY_STATE = "api_key"  # where the authenticated key is left in the request's state
FORM_OVERHEAD = 64 * 1024  # multipart boundaries, part headers and the small form fields


@dataclass(frozen=True)
class BodyLimits:
    upload_bytes: int  # one image
    images_per_request: int  # images in one enrollment
    json_bytes: int  # any other body

    def for_request(self, method: str, path: str, content_type: str) -> int:
        if not content_type.startswith("multipart/form-data"):
            return self.json_bytes
        images = self.images_per_request if method == "POST" and path.endswith("/faces") else 1
        return images * self.upload_bytes + FORM_OVERHEAD


class Guard:
    """Authentication, authorisation and body limits before the app reads a byte; a deadline around the rest."""

    def __init__(self, app, *, keys: list[ApiKey], scopes: ScopeTable, limits: BodyLimits, timeout_s: float,
                 default_gallery: str) -> None:
        self.app, self.keys, self.scopes, self.limits, self.timeout_s = app, keys, scopes, limits, timeout_s
        self.default_gallery = default_gallery

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        headers = dict(scope["headers"])
        refusal = self._refusal(scope, method, path, headers)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        cap = self.limits.for_request(method, path, headers.get(b"content-type", b"").decode("latin-1"))
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > cap):
            await _too_large(cap)(scope, receive, send)
            return
        body = _Body(receive, cap, expected=declared not in (None, b"0") or b"transfer-encoding" in headers)
        await self._run_with_deadline(scope, body.receive, send, body)

    def _refusal(self, scope, method: str, path: str, headers: dict):
        scope_needed = self.scopes.required(method, path)
        if scope_needed is None:
            return None
        sent = {value for name, value in scope["headers"] if name == b"x-api-key"}
        if len(sent) > 1:  # which one the caller meant is anyone's guess: never the one that happens to pass
            return error(400, "bad request", f"{len(sent)} different X-API-Key headers: send one")
        key = authenticate(headers.get(b"x-api-key", b"").decode("latin-1"), self.keys)
        if key is None:
            return error(401, "unauthorized", "missing or unknown API key (header X-API-Key)")
        scope.setdefault("state", {})[KEY_STATE] = key
        try:  # before the scope: a 403 would say the gallery exists
            # a path no route takes is no gallery's: the router's 404 says so, where a key of other galleries was
            # told the default gallery was not found (`/v1/identities/x/bogus`, a typo)
            if self.scopes.routed(path):
                check_reach(key, gallery_of(path, self.default_gallery))
        except GalleryNotFound as exc:
            return error(exc.http_status, exc.kind, str(exc))
        if scope_needed not in key.scopes:
            return error(403, "forbidden", f"API key {key.name!r} lacks the {scope_needed!r} scope")
        return None

    async def _run_with_deadline(self, scope, receive, send, body: _Body) -> None:
        started = False

        async def send_tracked(message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await asyncio.wait_for(self.app(scope, receive, send_tracked), self.timeout_s)
        except asyncio.TimeoutError:
            if started:  # the answer is under way; all that is left is to end it
                raise
            if not body.complete:  # the caller's body never all came: nothing here is down
                answer = error(408, "request timeout", f"the request body did not all arrive within "
                                                       f"{self.timeout_s:g} s")
            else:  # the work itself (a thread in a model or store call) cannot be interrupted; the caller is answered
                answer = error(503, "backend unavailable", f"the request took longer than {self.timeout_s:g} s")
                answer.headers["Retry-After"] = str(RETRY_AFTER_S)
            await answer(scope, receive, send)


def _too_large(cap: int):
    return error(413, "too large", f"the request body is over this route's limit of {cap} bytes")


class _Body:
    """The request body as it is received: stopped when it streams past `cap` bytes (a chunked upload has no
    Content-Length), and `complete` once its last part came, so a deadline can tell a caller that never finished
    sending from work that took too long. A request that declares no body is complete from the start."""

    def __init__(self, receive, cap: int, *, expected: bool) -> None:
        self._receive, self.cap, self.seen, self.complete = receive, cap, 0, not expected

    async def receive(self):
        message = await self._receive()
        if message["type"] == "http.request":
            self.seen += len(message.get("body", b""))
            if self.seen > self.cap:
                raise HTTPException(413, f"the request body is over this route's limit of {self.cap} bytes")
            self.complete = self.complete or not message.get("more_body", False)
        return message


_LOCKED_DOWN = "default-src 'none'; frame-ancestors 'none'"
# FastAPI's documentation pages load Swagger UI / ReDoc from jsDelivr and start them with an inline script
_DOCS = ("default-src 'none'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
         "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; img-src 'self' data: https://fastapi.tiangolo.com "
         "https://cdn.redoc.ly; font-src https://fonts.gstatic.com; connect-src 'self'; worker-src blob:; "
         "frame-ancestors 'none'")


# the review page: its own script and style only; thumbnails are shown from blob: URLs of fetched images
_PAGE = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; connect-src 'self'; "
         "frame-ancestors 'none'; base-uri 'none'; form-action 'none'")


class SecurityHeaders(HttpMiddleware):
    async def http(self, scope, receive, send) -> None:
        path = scope["path"]
        policy = _DOCS if path in ("/docs", "/redoc") else _PAGE if path.startswith("/review") else _LOCKED_DOWN
        extra = [(b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
                 (b"referrer-policy", b"no-referrer"), (b"cache-control", b"no-store"),
                 (b"content-security-policy", policy.encode())]
        await self.app(scope, receive, at_start(send, lambda message: with_headers(message, extra)))
