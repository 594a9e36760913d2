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

from jobs.api.asgi import HttpMiddleware, at_start, with_headers

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


class ServerTiming(HttpMiddleware):
    """The `Server-Timing` header: the app's time and each recorded phase's (a plain ASGI middleware: asgi.py)."""

    async def http(self, scope, receive, send) -> None:
        started, phases = time.perf_counter(), start_phases()

        def timed(message: dict) -> dict:
            timings = [f"app;dur={1000 * (time.perf_counter() - started):.2f}"]
            timings += [f"{name};dur={1000 * seconds:.2f}" for name, seconds in phases.items()]
            return with_headers(message, [(b"server-timing", ", ".join(timings).encode("latin-1"))])

        await self.app(scope, receive, at_start(send, timed))
