"""Every call into Milvus goes through here: one place that imports pymilvus, quiets its logs, opens clients, and
turns what it raises into the indexer's own errors (indexer/errors.py), by code rather than by message text.

Why one module: the store, the galleries, the calibration, the confirmed pairs and a re-embed all call Milvus.
When each reached into another's wrapper, a new call site had to know which private helper to borrow; now a
caller holds a `Milvus` (a client and how long to keep trying) and nothing else.

What a foreign error becomes (`trouble`; tests/indexer/test_milvus.py checks every pymilvus class and these codes):

    pymilvus ParamError, DataNotMatch..., PrimaryKey..., ...  raised by pymilvus before sending  -> REFUSED
    MilvusException code 100 (both stores), 1600 (server)      collection or alias not found       -> MISSING
    MilvusException code 101, 103, 201                          not loaded (after a restart)        -> NOT_LOADED
    MilvusException code 2 (pymilvus: could not connect),
      ConnectError, MilvusUnavailableException, ConnectionNotExistException, grpc UNAVAILABLE      -> UNREACHABLE
    grpc DEADLINE_EXCEEDED, grpc.FutureTimeoutError                                                  -> NO_ANSWER
    MilvusException code 6 (Lite), 1100 (server), 5, 7; grpc INVALID_ARGUMENT                      -> REFUSED
    MilvusException code 1 or 65535 (no usable code): a few words of its text (TEXT), else        -> FAILED
    anything else                                                                                    -> FAILED

    trouble      our error           retried  first
    REFUSED      InvalidValue        no
    MISSING      CollectionNotFound  no
    NOT_LOADED   BackendUnavailable  yes      load the collection again
    UNREACHABLE  BackendUnavailable  yes      a fresh client (at most once a second)
    NO_ANSWER    BackendUnavailable  yes      a fresh client (at most once a second)
    FAILED       BackendUnavailable  yes

The foreign text (hosts, ports, names) goes to the log only, one line a failure and a traceback at most once a
minute; what a caller gets says what went wrong in the project's words.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from common.errors import NotFound
from indexer.errors import BackendUnavailable, CollectionNotFound, IndexerError, InvalidValue

log = logging.getLogger("arcmatch.milvus")
_TRACEBACK_EVERY_S = 60.0  # an outage fails thousands of calls: one line each, a traceback now and then
_last_traceback = 0.0


def library():
    """pymilvus, imported on first use (checked on the driver, before any work is scheduled), its logs quieted."""
    try:
        import pymilvus
    except ImportError as exc:
        raise BackendUnavailable("pymilvus is not installed: pip install pymilvus milvus-lite") from exc
    _tame_logs()
    return pymilvus


def _traceback_due() -> bool:
    global _last_traceback
    now = time.monotonic()
    if now - _last_traceback < _TRACEBACK_EVERY_S:
        return False
    _last_traceback = now
    return True


class _OneLine(logging.Filter):
    """pymilvus logs a full traceback for every failed call and reconnect (~8 KB; 63 MB in one outage of a fault
    probe), some as exc_info, some written into the message: its records keep their first line, and a
    traceback passes at most once a minute, like ours."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if (record.exc_info or record.stack_info or "\n" in message) and not _traceback_due():
            record.exc_info, record.exc_text, record.stack_info = None, None, None
            record.msg, record.args = message.strip().splitlines()[0][:300] if message.strip() else "", ()
        return True


class _SaidByUs(logging.Filter):
    """pymilvus's own word on a failed call ("RPC error: ...") and on each reconnect it tries ("Connection recovery
    failed"): arcmatch logs every failed call itself, in one line with what it means (Milvus.__call__), so these
    made three lines of one failure (about 470 in 70 s of one outage with three clients)."""

    SAID = ("RPC error", "Connection recovery failed")

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.SAID)


class _LiteHasNoTimestamps(logging.Filter):
    """Milvus Lite does not implement AllocTimestamp, which pymilvus's query iterator asks for first and then does
    without: one server-side traceback and one client warning per scan (every calibration, listing, clustering),
    about nothing the user can change."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], NotImplementedError):
            return False
        return "failed to get mvccTs" not in record.getMessage()


def _tame_logs() -> None:
    for name in ("pymilvus", "pymilvus.milvus_client"):
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, _OneLine) for f in handler.filters):
                handler.addFilter(_OneLine())
            if not any(isinstance(f, _LiteHasNoTimestamps) for f in handler.filters):
                handler.addFilter(_LiteHasNoTimestamps())
            if not any(isinstance(f, _SaidByUs) for f in handler.filters):
                handler.addFilter(_SaidByUs())
    for name in ("grpc._server", "pymilvus.client.iterator.query_iterator"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _LiteHasNoTimestamps) for f in logger.filters):
            logger.addFilter(_LiteHasNoTimestamps())


def is_lite_uri(uri: str) -> bool:
    """Milvus Lite is a local file path; a server is http(s):// or tcp:// (or grpc)."""
    return "://" not in uri


def connect(uri: str, token: str | None = None, timeout: float = 30.0):
    """A MilvusClient for a Milvus Lite file path (./faces.db) or a server URI (http://host:19530).

    Every client gets a connection of its own, not pymilvus's one shared per URI. A server's shared one stays broken
    for over a minute after a server restart, and every client made later in the process would get it back. A
    Lite file's shared one is health-checked after 30 s idle with a 5 s deadline: on a loaded machine the check
    can miss, and pymilvus then "recovers" it by reconnecting to the old address, which failed a connect() for
    30 s while the file's server was up."""
    pymilvus = library()
    lite = is_lite_uri(uri)
    if lite:  # its lock failure is turned into one clear error below; no traceback from its logger first
        logging.getLogger("milvus_lite").setLevel(logging.CRITICAL)
        folder = Path(uri).expanduser().parent
        if not folder.is_dir():  # the caller's path, not an outage: said before Milvus Lite says it its own way
            raise NotFound(f"cannot open Milvus Lite at {uri}: the folder {folder} does not exist")
    try:
        return pymilvus.MilvusClient(uri=uri, token=token or "", timeout=timeout, dedicated=True)
    except pymilvus.MilvusException as exc:
        said = getattr(exc, "message", None) or str(exc)  # its words, not pymilvus's "<ConnectionConfigException..."
        hint = " (Milvus Lite opens a file from one process only: is another process using it?)" if lite else ""
        raise BackendUnavailable(f"cannot open Milvus at {uri}: {said}{hint}") from exc


@dataclass(frozen=True)
class Trouble:
    """What went wrong, in a few words of our own, and what that means for the call."""

    words: str
    error: type[IndexerError]
    says: str  # what the caller reads: {what} is the call
    retried: bool
    renew: bool = False  # a fresh client first
    reload: bool = False  # load the collection again first


_SHORTLY = "the face store failed {what} ({words}); try again shortly"


def said(call: str) -> str:
    """A Milvus call as a caller reads it in an answer ("a search", "a read"), not by its pymilvus name: a QA pass
    got "failed a list_aliases" back from a search. The metrics and the log keep the call's own name."""
    for words, kind in (("search", "a search"), ("upsert", "a write"), ("insert", "a write"),
                        ("delete", "a delete"), ("query", "a read"), ("get", "a read"), ("alias", "a look-up of "
                        "the gallery"), ("collection", "a look-up of the gallery's collection"), ("flush", "a write"),
                        ("load", "loading the gallery")):
        if words in call:
            return kind
    return "a request"
REFUSED = Trouble("value refused", InvalidValue, "the face store refused a value in {what}", retried=False)
MISSING = Trouble("not found", CollectionNotFound, "the face store has no such collection or alias ({what})",
                  retried=False)
NOT_LOADED = Trouble("collection not loaded", BackendUnavailable, _SHORTLY, retried=True, reload=True)
UNREACHABLE = Trouble("unreachable", BackendUnavailable, _SHORTLY, retried=True, renew=True)
NO_ANSWER = Trouble("no answer in time", BackendUnavailable, _SHORTLY, retried=True, renew=True)
FAILED = Trouble("failed", BackendUnavailable, _SHORTLY, retried=True)

# pymilvus's exception classes. Those it raises itself, before or instead of a request, say what happened by their
# class (their code is the default 1); the rest carry a store's status, and their code says (None here).
CLASSES: dict[str, Trouble | None] = {
    "MilvusException": None,
    "DescribeCollectionException": None,  # a status of DescribeCollection: 100 when missing (both stores)
    "SchemaMismatchRetryableException": None,
    "CollectionNotExistException": MISSING,
    "IndexNotExistException": MISSING,
    "ConnectError": UNREACHABLE,
    "ConnectionNotExistException": UNREACHABLE,
    "MilvusUnavailableException": UNREACHABLE,
    "ServerVersionIncompatibleException": FAILED,
    "SchemaNotReadyException": FAILED,
    **dict.fromkeys(["ParamError", "AmbiguousIndexName", "AutoIDException", "CannotInferSchemaException",
                     "ClusteringKeyException", "ConnectionConfigException", "DataNotMatchException",
                     "DataTypeNotMatchException", "DataTypeNotSupportException", "FieldTypeException",
                     "FieldsTypeException", "FunctionsTypeException", "InvalidConsistencyLevel",
                     "PartitionAlreadyExistException", "PartitionKeyException", "PrimaryKeyException"], REFUSED),
}

# A store's status code (MilvusException.code). Milvus Lite 3 sends 100 / 101 / 6 (its adapter/grpc/errors.py);
# the 2.3 server its merr codes. Codes not here (1: unexpected, 65535: undefined, ...) are FAILED, retried.
CODES: dict[int, Trouble] = {
    2: UNREACHABLE,  # pymilvus's CONNECT_FAILED when a channel cannot be set up; the server's ServiceUnavailable
    5: REFUSED, 6: REFUSED, 7: REFUSED,  # legacy IllegalArgument and IllegalDimension: Lite's bad filter or vector
    100: MISSING, 1600: MISSING,  # collection, alias
    101: NOT_LOADED, 103: NOT_LOADED, 201: NOT_LOADED,  # collection, not fully, partition
    1100: REFUSED,  # the server's ParameterInvalid
}

# The 2.3 server answers a filter it cannot parse, a top-k out of range and a vector of the wrong length with code
# 65535 (undefined), and pymilvus its own retry timeout ("[search] Retry timeout: 2s") with 65535 or 1: measured,
# no usable code. For those codes alone the text decides, and only these words of it.
UNCODED = {1, 65535}
TEXT: list[tuple[str, Trouble]] = [
    ("retry timeout", NO_ANSWER), ("deadline", NO_ANSWER), ("not loaded", NOT_LOADED),
    ("cannot parse expression", REFUSED), ("is invalid", REFUSED), ("should divide the dim", REFUSED),
]

# grpc's status codes, raised by pymilvus as grpc.RpcError (it re-raises some at once) or as the code of the
# MilvusException it raises once its own retries run out.
GRPC_CODES: dict[str, Trouble] = {
    "UNAVAILABLE": UNREACHABLE,
    "DEADLINE_EXCEEDED": NO_ANSWER,
    "INVALID_ARGUMENT": REFUSED,
    "OUT_OF_RANGE": REFUSED,
    "NOT_FOUND": MISSING,
}


def trouble(exc: BaseException) -> Trouble | None:
    """What a foreign exception means, or None for one that is not Milvus's (a bug of ours: not caught)."""
    import grpc

    pymilvus = library()
    if isinstance(exc, grpc.FutureTimeoutError):  # a channel not ready in time: pymilvus waiting to connect
        return NO_ANSWER
    if isinstance(exc, grpc.RpcError):
        return GRPC_CODES.get(exc.code().name, FAILED) if callable(getattr(exc, "code", None)) else FAILED
    if not isinstance(exc, pymilvus.MilvusException):
        return None
    by_class = next((CLASSES[c.__name__] for c in type(exc).__mro__ if CLASSES.get(c.__name__)), None)
    if by_class is not None:
        return by_class
    code = exc.code
    if isinstance(code, grpc.StatusCode):
        return GRPC_CODES.get(code.name, FAILED)
    if isinstance(code, int) and int(code) in CODES:
        return CODES[int(code)]
    if getattr(exc, "is_input_error", False):  # a newer server marks the caller's errors so
        return REFUSED
    if code in UNCODED:  # no usable code: only here does the text decide
        text = str(getattr(exc, "message", exc)).lower()
        return next((found for words, found in TEXT if words in text), FAILED)
    return FAILED


def _foreign_errors() -> tuple[type[BaseException], ...]:
    import grpc

    return (library().MilvusException, grpc.RpcError, grpc.FutureTimeoutError)


def _log_failure(what: str, problem: str, exc: BaseException) -> None:
    """One line for a failed call; the traceback at most once a minute."""
    first_line = (str(exc).strip().splitlines() or [""])[0][:300]
    log.warning("Milvus %s failed (%s): %s: %s", what, problem, type(exc).__name__, first_line,
                exc_info=_traceback_due())


class Property(str, Enum):
    """The collection properties arcmatch keeps, all in one table: each a string, JSON where it has structure.
    Milvus Lite drops schema descriptions; properties survive on both stores and move with nothing else."""

    INFO = "arcmatch.info"  # the model the collection was built for (store.CollectionInfo)
    PREVIOUS = "arcmatch.previous"  # where the gallery's alias pointed before it moved here (galleries.py)
    MIGRATION = "arcmatch.reembed"  # on a re-embed's target: {"source": collection, "snapshot_ns": ...}
    CALIBRATION = "arcmatch.gallery_calibration"  # calibration.GalleryCalibration
    TARGET = "arcmatch.target_fpir"  # the FPIR the gallery was made for, before its first calibration
    DISTINCT = "arcmatch.distinct"  # pairs confirmed to be different people (distinct.py)


# who wants to know about every call (the API's metrics register one): (call, seconds, outcome) -> None. Kept
# here as plain callables so that the indexer needs no metrics library.
OBSERVERS: list[Callable[[str, float, str], None]] = []


def _observe(what: str, seconds: float, outcome: str) -> None:
    for observer in OBSERVERS:
        observer(what, seconds, outcome)


class Milvus:
    """One client's calls. Every arcmatch call is idempotent (reads; upserts and deletes keyed by face id), so a
    failure that may pass is retried with backoff for up to `retry_s`; `reconnect` makes a fresh client when the
    store was unreachable; `loads` is the collection loaded again when the store says it is not loaded."""

    def __init__(self, client, *, retry_s: float = 3.0, reconnect: Callable[[], Any] | None = None,
                 loads: str | None = None) -> None:
        self.client = client
        self.retry_s = retry_s
        self.loads = loads
        self._reconnect, self._renewed_at = reconnect, -1.0
        self._owns_client = False  # the client given may be shared (a service's galleries, its alias): never closed

    def __call__(self, what: str, *args, retry: bool = True, fn: Callable | None = None, **kwargs):
        """The client's method `what` (or `fn`, named `what` in the log), with its errors translated; each try is
        told to the OBSERVERS (what, seconds, "ok" or the trouble's words)."""
        foreign = _foreign_errors()
        deadline, delay = time.monotonic() + (self.retry_s if retry else 0.0), 0.1
        while True:
            began = time.perf_counter()
            try:  # the client's method looked up on each try: a renewal replaces the client
                answer = (fn or getattr(self.client, what))(*args, **kwargs)
                _observe(what, time.perf_counter() - began, "ok")
                return answer
            except foreign as exc:
                found = trouble(exc) or FAILED
                _observe(what, time.perf_counter() - began, found.words)
                _log_failure(what, found.words, exc)
                if found.reload and what != "load_collection":
                    self._reload()
                elif found.renew:
                    self._renew()
                if not found.retried or time.monotonic() + delay > deadline:
                    raise found.error(found.says.format(what=said(what), words=found.words)) from exc
                time.sleep(delay)
                delay = min(2 * delay, 1.0)

    def _renew(self) -> None:
        """A fresh client after the store was unreachable, at most once a second.

        Measured on the 2.3 server stopped and started again: its first good search comes 24-27 s after start(),
        for an old client and a fresh one alike (the server's coordinators wait out the old sessions), so a new
        client does not make recovery sooner. It makes it certain: pymilvus's shared channel for a URI stayed broken
        for over a minute after the server answered, and never recovers when the address moved."""
        now = time.monotonic()
        if self._reconnect is None or now - self._renewed_at < 1.0:
            return
        self._renewed_at = now
        try:
            fresh = self._reconnect()
        except (BackendUnavailable, *_foreign_errors()) as exc:
            _log_failure("reconnect", UNREACHABLE.words, exc)
            return
        stale, self.client = self.client, fresh
        if self._owns_client:  # one this wrapper made. The one it was given may serve others (the API's galleries
            # and alias share it): closed, each of their calls failed "should create connection first" for good
            try:
                stale.close()
            except Exception:  # noqa: BLE001  (a broken client may fail to close; it is dropped either way)
                pass
        self._owns_client = True

    def _reload(self) -> None:
        if self.loads is None:
            return
        try:
            self.client.load_collection(self.loads, timeout=self.retry_s or None)
        except _foreign_errors() as exc:
            _log_failure("load_collection", (trouble(exc) or FAILED).words, exc)

    def properties(self, collection: str) -> dict[Property, str]:
        """arcmatch's properties of a collection (or of the collection an alias names), read afresh: another
        process may have set one since. A property never set is absent."""
        stored = self("describe_collection", collection).get("properties") or {}
        return {key: stored[key.value] for key in Property if stored.get(key.value) is not None}

    def set_properties(self, collection: str, values: Mapping[Property, str]) -> None:
        """Write these properties of a collection (the others stay as they are)."""
        self("alter_collection_properties", collection,
             properties={Property(key).value: str(value) for key, value in values.items()})
