"""Identity names with a slash in them, addressed by path: `/v1/identities/AC%2FDC`.

Why: the ASGI server hands the app its path with %2F already decoded, so "AC%2FDC" reached the router as two
segments and every identity route answered 404 for a name the API itself had accepted in a body (a merge, a move,
a promotion). A name may hold any character but a control character (jobs/api/schemas.py, IDENTITY_RULES), so an
encoded slash is carried through routing as ENCODED_SLASH, a control character no name has, and turned back into
"/" where a route reads the name (`restored`, in jobs/api/routes/identities.py).
"""

from __future__ import annotations

import re
from urllib.parse import unquote

from jobs.api.asgi import HttpMiddleware

ENCODED_SLASH = "\x1f"
_SLASH = re.compile(rb"%2f", re.IGNORECASE)


class EncodedSlashes(HttpMiddleware):
    """The request's path decoded again from the bytes received, with each %2F kept inside its segment."""

    async def http(self, scope, receive, send) -> None:
        raw = scope.get("raw_path")  # as received: percent-encoded (some servers leave the query on it)
        if raw and _SLASH.search(raw):
            kept = unquote(_SLASH.sub(b"%1F", raw.split(b"?", 1)[0]).decode("ascii", "replace"))
            # the same path as the server's, but for the kept slashes; where a proxy took a prefix off the path
            # (Serve's route prefix), the same part comes off
            decoded, path = kept.replace(ENCODED_SLASH, "/"), scope.get("path", "")
            if decoded.endswith(path):
                scope = {**scope, "path": kept[len(kept) - len(path):] if path else kept}
        await self.app(scope, receive, send)


def restored(name: str) -> str:
    """A path segment's name with its encoded slashes back."""
    return name.replace(ENCODED_SLASH, "/")
