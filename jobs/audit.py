"""The audit trail: who enrolled, deleted or (when enabled) searched what, as JSON lines that are only appended.

A face platform holds biometric data; its operators are asked who added a person, who erased one and when, and
whether a search was made for someone. Each API process appends one JSON object per request to a file of its own
per day, `audit-YYYY-MM-DD-<host>-<pid>.jsonl` in the audit directory (a local path or a shared volume mounted by
every replica): no two writers share a file, so no line is ever torn or interleaved, and a line is flushed and
fsynced before the answer leaves. A record holds the time, the API key's *name* (never the key), the method and
route, the identity and face ids, and the status; never image bytes or embeddings. Files older than the retention
are deleted when a new day's file is opened. `arcmatch audit` reads them back with filters.

The audit directory may also be a pyarrow filesystem URI (`s3://bucket/audit`, `gs://...`, `hdfs://...`): object
stores cannot append, so there each record is an object of its own, `audit-YYYY-MM-DD-<host>-<pid>-<n>.jsonl`,
written before the answer leaves and never changed (one PUT per audited request: for searches too, when those are
audited, a shared volume costs less). The same reader, retention and filters apply.
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
from indexer.archive import open_location

PATTERN = "audit-*.jsonl"
_filesystems: dict[str, tuple] = {}  # URI -> (pyarrow filesystem, path): resolving one (S3's region ...) costs


def _is_uri(location: str | Path) -> bool:
    return "://" in str(location) and not str(location).startswith("file://")


def _local(location: str | Path) -> Path:
    text = str(location)
    return Path(text[len("file://"):] if text.startswith("file://") else text)


def _filesystem(uri: str):
    if uri not in _filesystems:  # the archive's resolver: one rule for what a location URI means
        _filesystems[uri] = open_location(uri, "the audit location")
    return _filesystems[uri]


def _day(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d")


class AuditLog:
    """Appends records to today's file of this process (or, on an object store, an object per record);
    thread-safe (records come from worker threads)."""

    def __init__(self, location: str | Path, *, retention_days: int = 365) -> None:
        self.location = str(location)
        self.directory = None if _is_uri(location) else _local(location)
        self.retention_days = retention_days
        self._lock = threading.Lock()
        self._day: str | None = None
        self._handle = None
        self._writer = f"{socket.gethostname()}-{os.getpid()}"
        self._count = 0
        if self.directory is None:  # a URI that names no filesystem fails here, when the API starts
            _filesystem(self.location)

    def append(self, record: dict) -> None:
        now = time.time()
        line = json.dumps({"time": datetime.fromtimestamp(now, timezone.utc).isoformat(timespec="milliseconds"),
                           **record}, ensure_ascii=False, separators=(",", ":"), default=str)
        with self._lock:
            if self.directory is None:
                self._put(_day(now), line)
                return
            handle = self._open(_day(now))
            handle.write(line + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def _put(self, day: str, line: str) -> None:
        filesystem, base = _filesystem(self.location)
        if day != self._day:
            filesystem.create_dir(base, recursive=True)
            self._day = day
            self._expire(day)
        self._count += 1
        with filesystem.open_output_stream(f"{base}/audit-{day}-{self._writer}-{time.time_ns()}-{self._count}.jsonl",
                                           compression=None) as out:
            out.write((line + "\n").encode())

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
        cutoff = datetime.strptime(today, "%Y-%m-%d").replace(tzinfo=timezone.utc).timestamp()
        cutoff -= self.retention_days * 86400
        for name, remove in _entries(self.location):
            try:
                if datetime.strptime(name[6:16], "%Y-%m-%d").replace(tzinfo=timezone.utc).timestamp() < cutoff:
                    remove()
            except (ValueError, OSError):  # a foreign file or one another replica removed first
                continue

    def close(self) -> None:
        with self._lock:
            if self._handle is not None:
                self._handle.close()
                self._handle = None


def _entries(location: str | Path, *, must_exist: bool = False) -> list[tuple[str, object]]:
    """(file name, a callable that deletes it) of every audit file at the location, sorted by name."""
    if not _is_uri(location):
        directory = _local(location)
        if must_exist and not directory.is_dir():
            raise NotFound(f"no audit log at {directory}")
        return [(p.name, p.unlink) for p in sorted(directory.glob(PATTERN))] if directory.is_dir() else []
    from pyarrow import fs

    filesystem, base = _filesystem(str(location))
    infos = filesystem.get_file_info(fs.FileSelector(base, allow_not_found=True))
    if must_exist and not infos and filesystem.get_file_info(base).type == fs.FileType.NotFound:
        raise NotFound(f"no audit log at {location}")
    names = sorted(i.base_name for i in infos if i.type == fs.FileType.File and i.base_name.startswith("audit-")
                   and i.base_name.endswith(".jsonl"))
    return [(name, lambda path=f"{base}/{name}": filesystem.delete_file(path)) for name in names]


def _lines(location: str | Path, name: str) -> Iterator[str]:
    if not _is_uri(location):
        with open(_local(location) / name, encoding="utf-8") as handle:
            yield from handle
        return
    filesystem, base = _filesystem(str(location))
    with filesystem.open_input_stream(f"{base}/{name}", compression=None) as stream:
        yield from stream.read().decode("utf-8", errors="replace").splitlines()


def read(location: str | Path, *, since: str | None = None, until: str | None = None, key: str | None = None,
         identity: str | None = None, action: str | None = None, failed: bool | None = None,
         gallery: str | None = None) -> Iterator[dict]:
    """Records of every writer in time order, filtered: since/until are ISO times or dates (UTC), key the key's
    name, action one of the record's actions (enroll, delete_identity, delete_face, search, ...), failed True for
    answers of 400 and above only, gallery the gallery a record is about. `location` is a directory or a pyarrow
    filesystem URI."""
    lower, upper = _time(since, "since"), _time(until, "until")
    names = [name for name, _ in _entries(location, must_exist=True)]
    if lower:
        names = [n for n in names if n[6:16] >= lower[:10]]
    records = sorted(_records(location, names), key=lambda r: r.get("time", ""))
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
        if gallery is not None and record.get("gallery") != gallery:
            continue
        if failed is not None and (int(record.get("status", 0)) >= 400) != failed:
            continue
        yield record


def _records(location: str | Path, names: Iterable[str]) -> Iterator[dict]:
    for name in names:
        for line in _lines(location, name):
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
