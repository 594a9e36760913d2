"""The API's side of the audit trail (jobs/audit.py): routes note what they did, one middleware writes the record.

Every request that changes the gallery is recorded, refused ones included (a 401 on a delete is worth knowing);
searches only when `ARCMATCH_AUDIT_SEARCHES` is on, since a search log is itself personal data. The record is
written before the answer starts, so a write the caller saw acknowledged is always in the log.
"""

from __future__ import annotations

import asyncio
import logging

from fastapi import Request

from jobs.api.access import gallery_of
from jobs.api.guard import KEY_STATE
from jobs.api.metrics import AUDIT_FAILURES
from jobs.api.requests import STATE_KEY as REQUEST_STATE
from jobs.api.scopes import ScopeTable
from jobs.audit import AuditLog

NOTE_STATE = "audit"
log = logging.getLogger("arcmatch.api")


def note(request: Request, identity: str | None = None, **details) -> None:
    """What a route did, for its audit record: the identity, face ids or results; the action is the route's name
    (its function's, or the `name` its decorator gives), the same that a refused request's record takes from the
    route its path would have reached (ScopeTable.meant)."""
    setattr(request.state, NOTE_STATE, {"action": request.scope["route"].name, "identity": identity, **details})


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
                     **(state.get(NOTE_STATE) or self.scopes.meant(scope["method"], scope["path"]))}
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
