"""Server-Timing: time inside the app, and within it named phases (the search call), on every answer.

It tells a slow answer's network from its work, and the work from waiting on the search. Routes record a phase
through the module functions here: Ray Serve pickles the app, and a function is pickled by reference where the
ContextVar behind it cannot be pickled at all.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Iterator
from contextlib import contextmanager

_PHASES: contextvars.ContextVar[dict[str, float]] = contextvars.ContextVar("arcmatch_phases")


def start_phases() -> dict[str, float]:
    phases: dict[str, float] = {}
    _PHASES.set(phases)
    return phases


def current_phases() -> dict[str, float]:
    """The phases recorded so far for the request being answered (empty outside one)."""
    return _PHASES.get({})


def record_phase(name: str, seconds: float) -> None:
    _PHASES.get({})[name] = seconds


@contextmanager
def phase(name: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        record_phase(name, time.perf_counter() - started)


class ServerTiming:
    """A plain ASGI middleware, not `@app.middleware("http")`: that one (Starlette's BaseHTTPMiddleware) runs every
    request's app in a task of its own and passes the response through memory streams, CPU time that on a small
    machine is taken from the Milvus server's search (docs/BENCHMARKS.md)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, phases = time.perf_counter(), start_phases()

        async def send_timed(message) -> None:
            if message["type"] == "http.response.start":
                timings = [f"app;dur={1000 * (time.perf_counter() - started):.2f}"]
                timings += [f"{name};dur={1000 * seconds:.2f}" for name, seconds in phases.items()]
                header = (b"server-timing", ", ".join(timings).encode("latin-1"))
                message = {**message, "headers": [*message.get("headers", []), header]}
            await send(message)

        await self.app(scope, receive, send_timed)
