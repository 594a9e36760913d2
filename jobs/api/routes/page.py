"""The review page: a static page (no build chain) that a person opens in a browser to search by photo, name the
clusters of unnamed faces and take a face out of a person. It is served open, like the API's docs, because it
holds no data: every request it makes carries the API key typed into it, and the keys' scopes apply."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from common.errors import NotFound

STATIC = Path(__file__).resolve().parents[1] / "static"
PAGE_FILES = {"review.js": "text/javascript", "review.css": "text/css"}
router = APIRouter(tags=["review page"], include_in_schema=False)


@router.get("/review")
def review_page() -> FileResponse:
    """The review page (open like the docs: it holds no data; every request it makes carries the key)."""
    return FileResponse(STATIC / "review.html", media_type="text/html")


@router.get("/review/{name}")
def review_asset(name: str) -> FileResponse:
    if name not in PAGE_FILES:
        raise NotFound(f"no page file {name!r}")
    return FileResponse(STATIC / name, media_type=PAGE_FILES[name])
