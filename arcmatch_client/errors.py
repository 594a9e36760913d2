"""What the client raises: arcmatch's own error family (common/errors.py), one class per kind of answer, mapped
from the status in one place (`for_answer`). Each carries the answer's status, detail, request id and `error`, the
answer's own name for what went wrong ("no face", "too many faces", "bad request"), finer than the class.

    ArcmatchError
    ├── BadInput            400, 422: the request's values (the detail says which)
    │   ├── PayloadTooLarge     413
    │   └── UnsupportedMedia    415: not a photo in an accepted format
    ├── Unauthorized        401: no key, or an unknown one
    ├── Forbidden           403: the key lacks the scope
    ├── NotFound            404: no such identity, face, cluster or gallery (or one the key does not reach)
    ├── Conflict            409: a face of someone else, a face rejected from this identity, a gallery that exists
    ├── Unavailable         503 after the retries, or the service out of reach
    │   └── RateLimited         429 after the retries (a proxy in front of the service limits its callers)
    └── ServerError         500 and anything else unexpected
"""

from __future__ import annotations

from common.errors import (
    ArcmatchError,
    BadInput,
    Conflict,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
    Unavailable,
)

__all__ = ["ArcmatchError", "BadInput", "Conflict", "Forbidden", "NotFound", "PayloadTooLarge", "RateLimited",
           "ServerError", "Unauthorized", "Unavailable", "UnsupportedMedia", "for_answer"]


class UnsupportedMedia(BadInput):
    http_status = 415
    kind = "unsupported media type"


class RateLimited(Unavailable):
    http_status = 429
    kind = "too many requests"


class ServerError(ArcmatchError):
    """The service failed (a bug on its side: the detail says nothing more, its log has the rest)."""


BY_STATUS: dict[int, type[ArcmatchError]] = {400: BadInput, 401: Unauthorized, 403: Forbidden, 404: NotFound,
                                             409: Conflict, 413: PayloadTooLarge, 415: UnsupportedMedia,
                                             422: BadInput, 429: RateLimited, 503: Unavailable}


def for_answer(status: int, body: dict | None, request_id: str | None) -> ArcmatchError:
    """The error for an answer of `status` with the API's error body ({"error": kind, "detail": reason})."""
    detail = (body or {}).get("detail") or f"HTTP {status}"
    error = BY_STATUS.get(status, BadInput if 400 <= status < 500 else ServerError)(detail)
    error.status, error.detail, error.request_id = status, detail, request_id
    error.error = (body or {}).get("error") or error.kind
    return error
