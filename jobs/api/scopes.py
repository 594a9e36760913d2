"""Which scope a request needs, decided in one place: the route's own key dependency.

A route declares its scope once, by asking for `ReadKey` or `WriteKey` (jobs/api/deps.py). The Guard must decide
before FastAPI reads the body, and the audit trail which requests are writes; both ask this table, built from the
app's routes, so neither keeps a second set of path rules that could drift from the routes. A route that asks for
no key is open only when its path is listed in OPEN_PATHS (the tests hold every route to one of the two); a
request that matches no route still needs a key before it learns that the route does not exist.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from fastapi.routing import APIRoute

from jobs.api.slashes import restored

OPEN_PATHS = frozenset({"/v1/health", "/v1/ready", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json",
                        "/review", "/review/review.js", "/review/review.css",  # the page holds no data
                        "/metrics"})  # counts and timings only (jobs/api/metrics.py)
READS = frozenset({"GET", "HEAD", "OPTIONS"})


def declared_scope(dependant) -> str | None:
    """The scope a route's dependencies ask for (their `scope` attribute: ReadKey, WriteKey), or None."""
    for dependency in dependant.dependencies:
        found = getattr(dependency.call, "scope", None) or declared_scope(dependency)
        if found:
            return found
    return None


@dataclass(frozen=True)
class RouteEntry:
    """A route as requests reach it: its full path (a router included under a prefix, maybe twice: the face
    routes are), and the dependencies it declares."""

    path: str
    path_regex: re.Pattern
    methods: frozenset[str]
    dependant: Any
    name: str  # what the audit trail calls what it does (jobs/api/auditing.py)


def api_routes(routes):
    """Every APIRoute with its full path, through included routers: FastAPI includes a router lazily and keeps
    what each inclusion makes of its routes (prefix, dependencies) as its effective candidates."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield RouteEntry(route.path, route.path_regex, frozenset(route.methods), route.dependant, route.name)
        elif hasattr(route, "effective_candidates"):
            for candidate in route.effective_candidates():
                original = getattr(candidate, "original_route", None)
                if isinstance(original, APIRoute):
                    yield RouteEntry(candidate.path, candidate.path_regex, frozenset(candidate.methods),
                                     original.dependant, original.name)
                else:
                    yield from api_routes([candidate])


class ScopeTable:
    """(method, path) -> the scope the matching route declares. Built at the first request, when every route is
    in place (middleware is constructed before the routers are included)."""

    def __init__(self, app) -> None:
        self.app = app
        self._table: list[tuple[RouteEntry, str | None]] | None = None

    @property
    def table(self) -> list[tuple[RouteEntry, str | None]]:
        """Every route with the scope it declares."""
        if self._table is None:
            self._table = [(route, declared_scope(route.dependant)) for route in api_routes(self.app.routes)]
        return self._table

    def meant(self, method: str, path: str) -> dict:
        """The action (the route's name) and identity a request's route stands for, for the audit record of one
        refused before its route noted what it did (a 401, a 503 while the store is out); {} for no route."""
        for route, _ in self.table:
            found = route.path_regex.match(path) if method in route.methods else None
            if found:
                identity = found.groupdict().get("identity")
                return {"action": route.name, **({"identity": restored(identity)} if identity is not None else {})}
        return {}

    def template(self, method: str, path: str) -> str | None:
        """The path template of the route that takes this request (`/v1/identities/{identity}`), or None."""
        for route, _ in self.table:
            if method in route.methods and route.path_regex.match(path):
                return route.path
        return None

    def routed(self, path: str) -> bool:
        """Whether any route that asks for a key takes this path (by any method)."""
        return any(scope is not None and route.path_regex.match(path) for route, scope in self.table)

    def required(self, method: str, path: str) -> str | None:
        """None for the open paths; else the declared scope of the route for this method and path; for a method
        the path's routes do not take, the least of theirs (a key that may use the path learns it is a 405);
        for a path no route has, read for a lookup and write otherwise."""
        if path in OPEN_PATHS:
            return None
        on_path = set()
        for route, scope in self.table:
            if scope is not None and route.path_regex.match(path):
                if method in route.methods:
                    return scope
                on_path.add(scope)
        if on_path:
            return "read" if "read" in on_path else "write"
        return "read" if method in READS else "write"
