"""The audit trail: who enrolled, deleted or (when enabled) searched what, as JSON lines that are only appended.

A face platform holds biometric data; its operators are asked who added a person, who erased one and when, and
whether a search was made for someone. Each API process appends one JSON object per request to a file of its own
per day, `audit-YYYY-MM-DD-<host>-<pid>.jsonl` in the audit directory (a local path or a shared volume mounted by
every replica): no two writers share a file, so no line is ever torn or interleaved, and a line is flushed and
fsynced before the answer leaves. A record holds the time, the API key's *name* (never the key), the method and
route, the identity and face ids, and the status; never image bytes or embeddings. Files older than the retention
are deleted when a new day's file is opened. `arcmatch audit` reads them back with filters.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

from common.errors import BadInput, NotFound

PATTERN = "audit-*.jsonl"


def _day(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d")


class AuditLog:
    """Appends records to today's file of this process; thread-safe (records come from worker threads)."""

    def __init__(self, directory: str | Path, *, retention_days: int = 365) -> None:
        self.directory = Path(directory)
        self.retention_days = retention_days
        self._lock = threading.Lock()
        self._day: str | None = None
        self._handle = None
        self._writer = f"{socket.gethostname()}-{os.getpid()}"

    def append(self, record: dict) -> None:
        now = time.time()
        line = json.dumps({"time": datetime.fromtimestamp(now, timezone.utc).isoformat(timespec="milliseconds"),
                           **record}, ensure_ascii=False, separators=(",", ":"), default=str)
        with self._lock:
            handle = self._open(_day(now))
            handle.write(line + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def _open(self, day: str):
        if day != self._day or self._handle is None:
            if self._handle is not None:
                self._handle.close()
            self.directory.mkdir(parents=True, exist_ok=True)
            self._handle = open(self.directory / f"audit-{day}-{self._writer}.jsonl", "a", encoding="utf-8")
            self._day = day
            self._expire(day)
        return self._handle

    def _expire(self, today: str) -> None:
        cutoff = datetime.strptime(today, "%Y-%m-%d").timestamp() - self.retention_days * 86400
        for path in self.directory.glob(PATTERN):
            try:
                if datetime.strptime(path.name[6:16], "%Y-%m-%d").replace(tzinfo=timezone.utc).timestamp() < cutoff:
                    path.unlink()
            except (ValueError, OSError):  # a foreign file or one another replica removed first
                continue

    def close(self) -> None:
        with self._lock:
            if self._handle is not None:
                self._handle.close()
                self._handle = None


def read(directory: str | Path, *, since: str | None = None, until: str | None = None, key: str | None = None,
         identity: str | None = None, action: str | None = None, failed: bool | None = None) -> Iterator[dict]:
    """Records of every writer in time order, filtered: since/until are ISO times or dates (UTC), key the key's
    name, action one of the record's actions (enroll, delete_identity, delete_face, search, ...), failed True for
    answers of 400 and above only."""
    directory = Path(directory)
    if not directory.is_dir():
        raise NotFound(f"no audit log at {directory}")
    lower, upper = _time(since, "since"), _time(until, "until")
    files = sorted(directory.glob(PATTERN))
    if lower:
        files = [f for f in files if f.name[6:16] >= lower[:10]]
    records = sorted(_records(files), key=lambda r: r.get("time", ""))
    for record in records:
        when = record.get("time", "")
        if (lower and when < lower) or (upper and when > upper):
            continue
        if key is not None and record.get("key") != key:
            continue
        if identity is not None and record.get("identity") != identity:
            continue
        if action is not None and record.get("action") != action:
            continue
        if failed is not None and (int(record.get("status", 0)) >= 400) != failed:
            continue
        yield record


def _records(files: Iterable[Path]) -> Iterator[dict]:
    for path in files:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:  # a line cut by a crash mid-write: the rest of the file still reads
                    continue


def _time(text: str | None, name: str) -> str | None:
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        example = "2026-11-28 or 2026-11-28T16:00:00Z"
        raise BadInput(f"--{name} must be an ISO date or time ({example}), got {text!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    if name == "until" and len(text) == 10:  # a date alone: through the end of that day
        parsed += timedelta(days=1)
    return parsed.astimezone(timezone.utc).isoformat(timespec="milliseconds")
