"""The error report of a job that skipped inputs: a CSV (file, reason) beside its exit code EXIT_PARTIAL."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path


def write_error_report(path: str | Path, skipped: list[tuple[str, str]]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "reason"])
        writer.writerows(skipped)


def reasons(skipped: list[tuple[str, str]]) -> Counter:
    """How many inputs were skipped for each kind of reason (the text before its first colon)."""
    return Counter(reason.split(":")[0] for _, reason in skipped)
