"""Which gallery a request is about, and whether its key may reach it: decided in one place for the Guard (before
the body is read), the routes' key dependencies and the audit trail.

Every face route exists twice: under /v1/galleries/{gallery}/... for a named gallery, and at its old path for
the service's default gallery (ARCMATCH_GALLERY). A key that may not reach the gallery is answered exactly as if
the gallery did not exist (404 with the same words), never 403: it must not learn which other galleries there are.
"""

from __future__ import annotations

from common.errors import NotFound
from jobs.api.keys import ApiKey
from jobs.api.slashes import restored

PREFIX = "/v1/galleries"


def gallery_of(path: str, default: str) -> str | None:
    """The gallery named in the path, the default gallery for every other route, and None for the collection of
    galleries itself (/v1/galleries: listing and creating)."""
    if path == PREFIX or path == PREFIX + "/":
        return None
    if path.startswith(PREFIX + "/"):  # its encoded slashes back: the name as sent, in every answer about it
        return restored(path[len(PREFIX) + 1:].split("/", 1)[0])
    return default


class GalleryNotFound(NotFound):
    """No such gallery, or one the key may not reach: the two are told apart by nobody outside."""

    def __init__(self, gallery: str) -> None:
        super().__init__(f"gallery {gallery!r} not found")


def check_reach(key: ApiKey, gallery: str | None) -> None:
    if gallery is not None and not key.reaches(gallery):
        raise GalleryNotFound(gallery)
