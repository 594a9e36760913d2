"""The one family of errors arcmatch raises on purpose, and what each means to a user.

    ArcmatchError             base; never raised itself                       exit 1, HTTP 500
    ├── BadInput              the caller's value, file, image or setting      exit 2, HTTP 400
    │   ├── embedder.ImageError       unreadable, corrupt or out-of-limits image
    │   │   └── embedder.faces.NoFace / TooManyFaces
    │   ├── embedder.ModelError       unknown, incomplete or inconsistent model
    │   ├── indexer.InvalidValue      a value Milvus cannot store as given
    │   └── PayloadTooLarge           a body over its size limit              HTTP 413
    ├── Unauthorized          no API key, or an unknown one                   exit 2, HTTP 401
    ├── Forbidden             a key without the scope a request needs         exit 2, HTTP 403
    ├── NotFound              a file, model, run, collection or identity      exit 4, HTTP 404
    │   └── indexer.CollectionNotFound
    ├── Conflict              the request contradicts what is stored          exit 6, HTTP 409
    │   └── indexer.ModelMismatch     vectors of another model in the collection
    └── Unavailable           a backend (Milvus, a Ray cluster) cannot serve   exit 5, HTTP 503
        └── indexer.BackendUnavailable

Foreign errors (pymilvus, onnxruntime, PIL, Ray, pydantic) are translated into these where they occur, with the
project's own words as the message: the message of an ArcmatchError is shown to users and API clients as it is.
Anything else that escapes is a bug: the CLI exits 1 and the API answers 500, both without its text, and the
traceback goes to the log (jobs/cli and jobs/api map this family, each in one place).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_BAD_INPUT = 2
EXIT_PARTIAL = 3  # not an error: the job finished, but skipped some inputs (see its error report)
EXIT_NOT_FOUND = 4
EXIT_UNAVAILABLE = 5
EXIT_CONFLICT = 6
EXIT_INTERRUPTED = 130


class ArcmatchError(Exception):
    """Base of the family. `kind` is the short name an answer carries; the message is the user-facing detail."""

    exit_code = EXIT_INTERNAL
    http_status = 500
    kind = "internal error"


class BadInput(ArcmatchError):
    """A value, file, image or setting that the caller gave is wrong; the message says what and why."""

    exit_code = EXIT_BAD_INPUT
    http_status = 400
    kind = "bad input"


class PayloadTooLarge(BadInput):
    """A request body or upload over its size limit."""

    http_status = 413
    kind = "too large"


class Unauthorized(ArcmatchError):
    """No API key, or one the service does not know."""

    exit_code = EXIT_BAD_INPUT
    http_status = 401
    kind = "unauthorized"


class Forbidden(ArcmatchError):
    """A known API key without the scope the request needs."""

    exit_code = EXIT_BAD_INPUT
    http_status = 403
    kind = "forbidden"


class NotFound(ArcmatchError):
    """Something named by the caller does not exist."""

    exit_code = EXIT_NOT_FOUND
    http_status = 404
    kind = "not found"


class Conflict(ArcmatchError):
    """The request is well formed but contradicts what is already stored."""

    exit_code = EXIT_CONFLICT
    http_status = 409
    kind = "conflict"


class Unavailable(ArcmatchError):
    """A backend could not be reached or could not serve; trying again later may succeed."""

    exit_code = EXIT_UNAVAILABLE
    http_status = 503
    kind = "backend unavailable"


def exit_code(exc: BaseException) -> int:
    """The CLI's exit code for an exception: the family's own, 130 for Ctrl-C, 1 for anything else."""
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    return exc.exit_code if isinstance(exc, ArcmatchError) else EXIT_INTERNAL
