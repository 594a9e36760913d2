"""The API's side of the audit trail (jobs/audit.py): routes note what they did, one middleware writes the record.

Every request that changes the gallery is recorded, refused ones included (a 401 on a delete is worth knowing);
searches only when `ARCMATCH_AUDIT_SEARCHES` is on, since a search log is itself personal data. The record is
written before the answer starts, so a write the caller saw acknowledged is always in the log.
"""

from __future__ import annotations

import asyncio
import logging
import re

from fastapi import Request

from jobs.api.access import gallery_of
from jobs.api.guard import KEY_STATE
from jobs.api.metrics import AUDIT_FAILURES
from jobs.api.requests import STATE_KEY as REQUEST_STATE
from jobs.api.scopes import ScopeTable
from jobs.api.slashes import restored
from jobs.audit import AuditLog

NOTE_STATE = "audit"
log = logging.getLogger("arcmatch.api")


# what a request was meant to do, read off its route, for the record of one refused before its route noted it (a
# 401, a 503 while the store is out): (method, path after /v1 and any /galleries/NAME) -> action; group 1 the identity
_ROUTES = [(method, re.compile(pattern), action) for method, pattern, action in (
    ("POST", r"^/identities/([^/]+)/faces$", "enroll"),
    ("DELETE", r"^/identities/([^/]+)$", "delete_identity"),
    ("DELETE", r"^/identities/([^/]+)/faces/\d+$", "delete_face"),
    ("POST", r"^/identities/([^/]+)/faces/\d+/reject$", "reject_face"),
    ("POST", r"^/identities/([^/]+)/faces/\d+/move$", "move_face"),
    ("POST", r"^/identities/([^/]+)/faces/\d+/confirm$", "confirm_face"),
    ("POST", r"^/identities/([^/]+)/merge$", "merge_identity"),
    ("POST", r"^/identities/([^/]+)/name$", "name_faces"),
    ("POST", r"^/search$", "search"),
    ("POST", r"^/search/embedding$", "search_embedding"),
    ("POST", r"^/calibration$", "calibrate"),
    ("DELETE", r"^/calibration$", "calibration_clear"),
    ("POST", r"^/gallery/distinct$", "distinct"),
    ("POST", r"^/gallery/strangers(?:/kept)?$", "confirm_strangers"),
)]
_IN_GALLERY = re.compile(r"^/v1(?:/galleries/[^/]+)?(/.*)$")


def meant(method: str, path: str) -> dict:
    """The action (and identity) a request's route stands for; {} for one not known here."""
    found = _IN_GALLERY.match(path)
    for route_method, pattern, action in _ROUTES if found else ():
        matched = pattern.match(found.group(1)) if route_method == method else None
        if matched:
            return {"action": action, **({"identity": restored(matched.group(1))} if matched.groups() else {})}
    return {}


def note(request: Request, action: str, identity: str | None = None, **details) -> None:
    """What a route did, for its audit record: the action's name, the identity, face ids or results."""
    setattr(request.state, NOTE_STATE, {"action": action, "identity": identity, **details})


class Audit:
    def __init__(self, app, *, audit_log: AuditLog, scopes: ScopeTable, searches: bool, gallery: str) -> None:
        self.app, self.log, self.scopes, self.searches = app, audit_log, scopes, searches
        self.gallery = gallery  # the default; every record names its gallery (a route's note may name its own)

    def _wanted(self, method: str, path: str) -> bool:
        needed = self.scopes.required(method, path)  # the route's own: a write is what its route declares
        if needed in ("write", "admin"):
            return True
        return self.searches and method == "POST" and needed == "read"

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or not self._wanted(scope["method"], scope["path"]):
            await self.app(scope, receive, send)
            return

        recorded = False

        async def record(status: int) -> None:
            nonlocal recorded
            recorded = True
            state = scope.get("state", {})
            key = state.get(KEY_STATE)
            entry = {"key": key.name if key else None, "gallery": gallery_of(scope["path"], self.gallery),
                     "request_id": state.get(REQUEST_STATE),
                     "method": scope["method"], "path": scope["path"],
                     "client": (scope.get("client") or ("",))[0], "status": status,
                     **(state.get(NOTE_STATE) or meant(scope["method"], scope["path"]))}
            try:
                await asyncio.to_thread(self.log.append, entry)
            except OSError as exc:  # the gallery may have changed; answer, and say loudly that the trail has a gap
                AUDIT_FAILURES.inc()
                log.error("audit log write failed (%s): %s", exc.__class__.__name__, entry)

        async def send_recorded(message) -> None:
            if message["type"] == "http.response.start":
                await record(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_recorded)
        except Exception:  # a bug: the 500 is answered further out, past this middleware; the trail still has it
            if not recorded:
                await record(500)
            raise
