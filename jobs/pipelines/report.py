"""The error report of a job that skipped inputs: a CSV (file, reason) beside its exit code EXIT_PARTIAL."""

from __future__ import annotations

import csv
import re
from collections import Counter
from pathlib import Path


def write_error_report(path: str | Path, skipped: list[tuple], header: tuple[str, ...] = ("file", "reason")) -> None:
    """One row per skipped input, its reason last."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(skipped)


def reasons(skipped: list[tuple]) -> Counter:
    """How many inputs were skipped for each kind of reason: the text before its first colon or parenthesis
    ("unreadable file", "no face found in the image", "no face passes the quality gate")."""
    return Counter(re.split(r"[:(]", row[-1], maxsplit=1)[0].strip() for row in skipped)
