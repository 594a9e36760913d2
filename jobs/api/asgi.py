"""What the API's plain ASGI middlewares share: passing anything but HTTP through, and changing the answer's first
message (its status and headers) on its way out.

Why plain ASGI and not `@app.middleware("http")`: Starlette's BaseHTTPMiddleware runs every request's app in a task
of its own and passes the response through memory streams, CPU time that on a small machine is taken from the
Milvus server's search (docs/BENCHMARKS.md). A plain one costs a function call per message.
"""

from __future__ import annotations

from collections.abc import Callable


class HttpMiddleware:
    """Anything but an HTTP request goes straight to the app; `http` handles a request."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.http(scope, receive, send)

    async def http(self, scope, receive, send) -> None:
        raise NotImplementedError


def at_start(send, change: Callable[[dict], dict]):
    """`send` that passes the answer's start message (status, headers) through `change` first."""

    async def sending(message) -> None:
        await send(change(message) if message["type"] == "http.response.start" else message)

    return sending


def with_headers(message: dict, headers: list[tuple[bytes, bytes]]) -> dict:
    return {**message, "headers": [*message.get("headers", []), *headers]}
