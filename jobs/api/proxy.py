"""What Ray Serve's HTTP proxy answers when the replica serving a request dies: a 503 with Retry-After, as for
every other outage of this service, instead of a bare 500.

Why: when a replica's node dies, the requests in flight on it fail (docs/BENCHMARKS.md, "A worker node's death
under the API on Ray Serve"). Serve's proxy answers a timeout, back-pressure or an unavailable deployment itself
(408, 429, 503) but sends nothing for any other failure, and the HTTP server fills that silence in with a plain
500 "Internal Server Error": to a client, a bug in arcmatch, whose own 500 means exactly that. It is an outage the
service recovers from in about two seconds (the proxy routes around the dead replica), and every request of this
API may be repeated (an enrollment of the same photo is the same face), so the answer is 503: try again.

The middleware runs in the proxy, installed through Ray Serve's RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH, which
the proxy reads from its own environment when it starts: `arcmatch serve --ray` sets it (PROXY_ENV) for the local
cluster it starts, k8s/ sets it on every node, and a cluster started by hand needs it in `ray start`'s
environment (docs/deploy.md).
"""

from __future__ import annotations

from jobs.api.asgi import HttpMiddleware

PROXY_CALLBACK = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
PROXY_ENV = {PROXY_CALLBACK: "jobs.api.proxy.middlewares"}
RETRY_AFTER_S = 1  # the proxy stops routing to a dead replica within about two seconds
UNANSWERED = "the replica serving this request stopped before it answered; try again"


class UnansweredIs503(HttpMiddleware):
    """An ASGI middleware: an HTTP request the app behind it leaves without a response, or fails before one
    started, is answered 503 with Retry-After and the API's error body, as the API answers its own outages."""

    async def http(self, scope, receive, send) -> None:
        started = False

        async def watched(message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except Exception:
            if started:
                raise
        if not started:  # the API's own error body (jobs/api/errors.py), as its Guard answers a request timed out
            from jobs.api.errors import error

            answer = error(503, "backend unavailable", UNANSWERED, {"Retry-After": str(RETRY_AFTER_S)})
            await answer(scope, receive, send)


def middlewares() -> list:
    """What Ray Serve's proxy calls (PROXY_ENV) for the Starlette middlewares to wrap itself in."""
    from starlette.middleware import Middleware

    return [Middleware(UnansweredIs503)]
