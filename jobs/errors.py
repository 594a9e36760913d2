"""Where foreign and internal errors become exit codes and HTTP statuses: the edge of arcmatch.

Each package raises its own small errors, derived from the builtin category they belong to; this module is the
one place that knows what each category means to a user.
"""

from __future__ import annotations

import csv
from pathlib import Path

from embedder.errors import ImageError, ModelError
from indexer.errors import BackendUnavailable, CollectionNotFound, IndexerError

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_BAD_INPUT = 2
EXIT_PARTIAL = 3  # the job finished, but some inputs were skipped (see its error report)
EXIT_NOT_FOUND = 4
EXIT_UNAVAILABLE = 5


def classify(exc: BaseException) -> tuple[int, int, str]:
    """(exit code, HTTP status, short kind) for an exception; unknown ones are internal errors."""
    if isinstance(exc, (CollectionNotFound, FileNotFoundError)):
        return EXIT_NOT_FOUND, 404, "not found"
    if isinstance(exc, BackendUnavailable):
        return EXIT_UNAVAILABLE, 503, "backend unavailable"
    if isinstance(exc, (ImageError, ModelError, IndexerError, ValueError)):
        return EXIT_BAD_INPUT, 400, "bad input"
    return EXIT_INTERNAL, 500, "internal error"


def write_error_report(path: str | Path, skipped: list[tuple[str, str]]) -> None:
    """The CSV (file, reason) of inputs a job skipped, beside its exit code EXIT_PARTIAL."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "reason"])
        writer.writerows(skipped)
