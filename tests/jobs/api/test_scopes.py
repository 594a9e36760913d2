"""Every route's scope is declared once, by its key dependency (ReadKey, WriteKey, or none for the open routes
listed as open), and the Guard and the audit trail read that declaration (jobs/api/scopes.py): a request to each
route needs exactly the scope its route declares, and the audit records what its route calls a write."""

import re

import pytest

from jobs.api.app import create_app
from jobs.api.scopes import OPEN_PATHS, ScopeTable, api_routes, declared_scope
from jobs.settings import Settings
from tests.helpers import WRITE_ENTRY

EXAMPLES = {"identity": "ann", "face": "12", "cluster": "3", "name": "review.js", "gallery": "scopes"}


def example(path: str) -> str:
    return re.sub(r"\{(\w+)(?::\w+)?\}", lambda m: EXAMPLES[m.group(1)], path)


@pytest.fixture(scope="module")
def routes(tmp_path_factory, tiny_model_dir):
    settings = Settings(model=tiny_model_dir, api_keys=WRITE_ENTRY,
                        milvus_uri=str(tmp_path_factory.mktemp("scopes") / "s.db"), gallery="scopes")
    app = create_app(settings)
    found = list(api_routes(app.routes))
    documented = {(m.upper(), path) for path, operations in app.openapi()["paths"].items() for m in operations}
    walked = {(m, re.sub(r"\{(\w+):\w+\}", r"{\1}", r.path)) for r in found for m in r.methods}
    assert documented <= walked  # none hidden from the walk below
    return app, found


def test_every_route_has_a_scope_and_a_request_needs_exactly_that_one(routes):
    app, found = routes
    table, seen = ScopeTable(app), 0
    for route in found:
        declared = declared_scope(route.dependant)
        for method in route.methods:
            path = example(route.path)
            if declared is None:
                assert path in OPEN_PATHS, f"{method} {route.path} asks for no key but is not listed as open"
            needed = table.required(method, path)
            assert needed == declared, f"{method} {route.path}: a request needs {needed!r}, the route {declared!r}"
            seen += 1
    assert seen >= 25  # every route of the API, not a few


def test_a_request_no_route_answers_still_needs_a_key(routes):
    table = ScopeTable(routes[0])
    assert table.required("GET", "/v1/nothing-here") == "read"
    assert table.required("DELETE", "/v1/nothing-here") == "write"
    assert table.required("PUT", "/v1/search") == "read"  # a method the path's routes do not take: their least
    assert table.required("PUT", "/v1/identities/ann/merge") == "write"


def test_writes_are_the_routes_that_change_something(routes):
    writes = {(m, r.path) for r in routes[1] for m in r.methods if declared_scope(r.dependant) in ("write", "admin")}
    assert all(m in ("POST", "DELETE") for m, _ in writes)
    assert ("POST", "/v1/identities/{identity}/merge") in writes and ("POST", "/v1/gallery/distinct") in writes
    assert ("POST", "/v1/search") not in writes  # a search reads, though it is a POST


def test_a_scope_named_twice_is_one_scope_in_the_entry():
    from jobs.api.keys import new_key, parse_keys

    key, entry = new_key("dup", ["write", "read", "read"])
    assert entry.split(":")[1] == "read+write"
    assert parse_keys(entry)[0].scopes == {"read", "write"}
