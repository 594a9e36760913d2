"""The audit trail's storage (jobs/audit.py): a local directory with one appended file per process and day, or a
pyarrow filesystem URI with one object per record; both read back in time order, filtered, and expire alike.

`mock://` is Arrow's in-memory filesystem, reached through the same `FileSystem.from_uri` as `s3://` or `gs://`."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from common.errors import BadInput, NotFound
from jobs.audit import AuditLog, read

_n = itertools.count()


@pytest.fixture(params=["directory", "uri"])
def location(request, tmp_path):
    return str(tmp_path / "audit") if request.param == "directory" else f"mock:///audit-{next(_n)}"


def test_records_read_back_in_order_with_filters(location):
    log = AuditLog(location)
    log.append({"action": "enroll", "identity": "ann", "key": "admin", "status": 201})
    log.append({"action": "delete_identity", "identity": "ann", "key": "admin", "status": 200})
    log.append({"action": "search", "key": "reader", "status": 400})
    log.close()
    assert [r["action"] for r in read(location)] == ["enroll", "delete_identity", "search"]
    assert [r["action"] for r in read(location, key="reader")] == ["search"]
    assert [r["action"] for r in read(location, identity="ann", failed=False)] == ["enroll", "delete_identity"]
    assert [r["status"] for r in read(location, failed=True)] == [400]
    assert list(read(location, until="2000-01-01")) == []


def test_an_object_store_gets_one_object_per_record_and_never_rewrites_one(tmp_path):
    from pyarrow import fs

    from jobs.audit import _filesystem

    location = f"mock:///audit-{next(_n)}"
    log = AuditLog(location)
    log.append({"action": "enroll", "status": 201})
    filesystem, base = _filesystem(location)
    first = {i.path: i.size for i in filesystem.get_file_info(fs.FileSelector(base))}
    log.append({"action": "delete_face", "status": 200})
    after = {i.path: i.size for i in filesystem.get_file_info(fs.FileSelector(base))}
    assert len(first) == 1 and len(after) == 2 and all(after[path] == size for path, size in first.items())


def test_files_past_the_retention_are_removed_when_a_new_day_opens(location):
    log = AuditLog(location, retention_days=30)
    log.append({"action": "enroll", "status": 201})  # creates the location
    old, recent = "audit-2001-01-01-elsewhere-1.jsonl", "audit-2999-01-01-elsewhere-1.jsonl"
    for name in (old, recent):
        _write(location, name, '{"time": "2001-01-01T00:00:00.000+00:00", "action": "enroll", "status": 201}\n')
    log._day = None  # as at midnight: the next record opens a new day
    log.append({"action": "enroll", "status": 201})
    names = _names(location)
    assert old not in names and recent in names


def test_a_missing_or_unopenable_location_is_a_clear_error(tmp_path):
    with pytest.raises(NotFound, match="no audit log"):
        list(read(tmp_path / "nowhere"))
    with pytest.raises(NotFound, match="no audit log"):
        list(read(f"mock:///nowhere-{next(_n)}"))
    with pytest.raises(BadInput, match="not a location pyarrow can open"):
        AuditLog("nosuchscheme://bucket/audit")


def _write(location: str, name: str, text: str) -> None:
    if "://" not in location:
        Path(location, name).write_text(text)
        return
    from jobs.audit import _filesystem

    filesystem, base = _filesystem(location)
    with filesystem.open_output_stream(f"{base}/{name}") as out:
        out.write(text.encode())


def _names(location: str) -> set[str]:
    from jobs.audit import _entries

    return {name for name, _ in _entries(location)}
