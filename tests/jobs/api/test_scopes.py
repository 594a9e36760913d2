"""Every route's scope is declared once by its key dependency (ReadKey, WriteKey, or none for the open routes),
and the Guard, which decides from the method and path before the body is read, agrees with each of them; the
audit trail records what the Guard calls a write."""

import re

import pytest
from fastapi.routing import APIRoute

from jobs.api.app import create_app
from jobs.api.guard import OPEN_PATHS, required_scope
from jobs.settings import Settings
from tests.helpers import WRITE_ENTRY

EXAMPLES = {"identity": "ann", "face": "12", "cluster": "3", "name": "review.js"}


def declared_scope(dependant) -> str | None:
    for dependency in dependant.dependencies:
        found = getattr(dependency.call, "scope", None) or declared_scope(dependency)
        if found:
            return found
    return None


def example(path: str) -> str:
    return re.sub(r"\{(\w+)(?::\w+)?\}", lambda m: EXAMPLES[m.group(1)], path)


@pytest.fixture(scope="module")
def routes(tmp_path_factory, tiny_model_dir):
    settings = Settings(model=tiny_model_dir, api_keys=WRITE_ENTRY,
                        milvus_uri=str(tmp_path_factory.mktemp("scopes") / "s.db"), collection="scopes")
    app = create_app(settings)
    found = list(api_routes(app.routes))
    documented = {(m.upper(), path) for path, operations in app.openapi()["paths"].items() for m in operations}
    walked = {(m, re.sub(r"\{(\w+):\w+\}", r"{\1}", r.path)) for r in found for m in r.methods}
    assert documented <= walked  # none hidden from the walk below
    return found


def api_routes(routes):
    """Every APIRoute, through included routers (FastAPI nests them)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif hasattr(route, "original_router"):
            yield from api_routes(route.original_router.routes)


def test_every_route_declares_the_scope_the_guard_enforces(routes):
    seen = 0
    for route in routes:
        declared = declared_scope(route.dependant)
        for method in route.methods:
            path = example(route.path)
            guard = required_scope(method, path)
            assert guard == declared, f"{method} {route.path}: the Guard asks {guard!r}, the route {declared!r}"
            if declared is None:
                assert path in OPEN_PATHS, f"{method} {route.path} is open but not listed as open"
            seen += 1
    assert seen >= 25  # every route of the API, not a few


def test_writes_are_the_routes_that_change_something(routes):
    writes = {(m, r.path) for r in routes for m in r.methods if declared_scope(r.dependant) == "write"}
    assert all(m in ("POST", "DELETE") for m, _ in writes)
    assert ("POST", "/v1/identities/{identity}/merge") in writes and ("POST", "/v1/gallery/distinct") in writes
    assert ("POST", "/v1/search") not in writes  # a search reads, though it is a POST
