"""Encoded slashes kept inside their path segment (jobs/api/slashes.py); the API round trip is in test_app.py."""

from __future__ import annotations

import asyncio

import pytest

from jobs.api.slashes import ENCODED_SLASH, EncodedSlashes, restored


def routed(raw: bytes, path: str) -> str:
    seen = {}

    async def app(scope, receive, send) -> None:
        seen["path"] = scope["path"]

    asyncio.run(EncodedSlashes(app)({"type": "http", "raw_path": raw, "path": path}, None, None))
    return seen["path"]


@pytest.mark.parametrize(("raw", "path", "expected"), [
    (b"/v1/identities/AC%2FDC", "/v1/identities/AC/DC", f"/v1/identities/AC{ENCODED_SLASH}DC"),
    (b"/v1/identities/AC%2fDC/faces?x=%2F", "/v1/identities/AC/DC/faces", f"/v1/identities/AC{ENCODED_SLASH}DC/faces"),
    # a proxy that took its route prefix off the path: the same part comes off
    (b"/api/v1/identities/A%2FB", "/v1/identities/A/B", f"/v1/identities/A{ENCODED_SLASH}B"),
    (b"/v1/identities/%C3%85sa", "/v1/identities/\u00c5sa", "/v1/identities/\u00c5sa"),  # nothing to keep
])
def test_the_router_sees_a_kept_slash_where_the_name_had_one(raw, path, expected):
    assert routed(raw, path) == expected


def test_a_route_reads_the_name_with_its_slash():
    assert restored(f"AC{ENCODED_SLASH}DC") == "AC/DC" and restored("plain") == "plain"
