"""FaceIndex: one Milvus collection of face embeddings, on Milvus Lite or a Milvus server alike.

The client is passed in (connect() builds one from a URI), so tests, the CLI and the API share this code and
only differ in where they point. The collection records the model it was built for in a collection property
(Milvus Lite drops schema descriptions, properties survive on both stores); writing
or searching with vectors of another model is refused with ModelMismatch.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from indexer.errors import BackendUnavailable, CollectionNotFound, InvalidValue, ModelMismatch
from indexer.ids import (
    UNLABELLED,
    clip_utf8,
    quote,
    validate_face_id,
    validate_identity,
    validate_metadata,
    validate_stored_identity,
)

VECTOR = "vector"
INFO_PROPERTY = "arcmatch.info"
OUTPUT_FIELDS = ["identity", "source", "model_version", "created_at", "metadata"]
SEARCH_AMONG = {"labelled": f"identity != {quote(UNLABELLED)}", "unlabelled": f"identity == {quote(UNLABELLED)}",
               "all": ""}
DEFAULT_EF = 192  # HNSW search list: recall@1 1.000 at 1M faces, where 128 gave 0.986 and 64 0.953 (BENCHMARKS)
SCAN_BATCH = 10_000  # query-iterator page: the 2.3 server scans 100k ids in 4.8 s at 10k a page, 37 s at 1k
INDEX_PARAMS = {
    "FLAT": {},
    "HNSW": {"M": 16, "efConstruction": 200},
    "IVF_FLAT": {"nlist": 1024},
    "DISKANN": {},
    "AUTOINDEX": {},
}


def _milvus():
    try:
        import pymilvus
    except ImportError as exc:  # checked on the driver, before any work is scheduled
        raise BackendUnavailable("pymilvus is not installed: pip install pymilvus milvus-lite") from exc
    _tame_logs()
    return pymilvus


class _OneLine(logging.Filter):
    """pymilvus logs a full traceback for every failed call and reconnect (~8 KB; 63 MB in one outage of a fault
    probe), some as exc_info, some written into the message: its records keep their first line, and a
    traceback passes at most once a minute, like ours."""

    def filter(self, record: logging.LogRecord) -> bool:
        global _last_traceback
        message = record.getMessage()
        if record.exc_info or record.stack_info or "\n" in message:
            now = time.monotonic()
            if now - _last_traceback >= _TRACEBACK_EVERY_S:
                _last_traceback = now
            else:
                record.exc_info, record.exc_text, record.stack_info = None, None, None
                record.msg, record.args = message.strip().splitlines()[0][:300] if message.strip() else "", ()
        return True


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
    for name in ("grpc._server", "pymilvus.client.iterator.query_iterator"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _LiteHasNoTimestamps) for f in logger.filters):
            logger.addFilter(_LiteHasNoTimestamps())


def is_lite_uri(uri: str) -> bool:
    """Milvus Lite is a local file path; a server is http(s):// or tcp:// (or grpc)."""
    return "://" not in uri


def connect(uri: str, token: str | None = None, timeout: float = 30.0):
    """A MilvusClient for a Milvus Lite file path (./faces.db) or a server URI (http://host:19530).

    A server client gets a connection of its own, not pymilvus's one shared per URI: after a server restart the
    shared one stays broken for over a minute, and every client made later in the process would get it back."""
    pymilvus = _milvus()
    lite = is_lite_uri(uri)
    if lite:  # its lock failure is turned into one clear error below; no traceback from its logger first
        logging.getLogger("milvus_lite").setLevel(logging.CRITICAL)
    try:
        return pymilvus.MilvusClient(uri=uri, token=token or "", timeout=timeout,
                                     **({} if lite else {"dedicated": True}))
    except pymilvus.MilvusException as exc:
        hint = " (Milvus Lite opens a file from one process only: is another process using it?)" if lite else ""
        raise BackendUnavailable(f"cannot open Milvus at {uri}: {exc}{hint}") from exc


log = logging.getLogger("arcmatch.store")
_TRACEBACK_EVERY_S = 60.0  # an outage fails thousands of calls: one line each, a traceback now and then
_last_traceback = 0.0


def _foreign_errors() -> tuple[type[BaseException], ...]:
    import grpc

    return (_milvus().MilvusException, grpc.RpcError, grpc.FutureTimeoutError)


def _diagnose(exc: BaseException) -> str:
    """What went wrong, in a few words of our own: nothing of the exception's text reaches a caller."""
    text = str(exc).lower()
    if "not loaded" in text or "not load" in text:
        return "collection not loaded"
    if "timeout" in text or "deadline" in text:
        return "no answer in time"
    if "unavailable" in text or "connect" in text or "refused" in text or "channel" in text:
        return "unreachable"
    if "not exist" in text or "not found" in text:
        return "collection missing"
    code = getattr(exc, "code", None)
    return f"error code {code() if callable(code) else code}"


def _log_failure(what: str, problem: str, exc: BaseException) -> None:
    global _last_traceback
    now = time.monotonic()
    with_trace = now - _last_traceback >= _TRACEBACK_EVERY_S
    if with_trace:
        _last_traceback = now
    first_line = (str(exc).strip().splitlines() or [""])[0][:300]
    log.warning("Milvus %s failed (%s): %s: %s", what, problem, type(exc).__name__, first_line, exc_info=with_trace)


@dataclass(frozen=True)
class CollectionInfo:
    """What the collection was built for; stored as JSON in the collection property INFO_PROPERTY."""

    model_version: str
    dim: int
    threshold: float | None = None
    model_spec: dict | None = None

    def to_json(self) -> str:
        return json.dumps({"arcmatch": 1, "model_version": self.model_version, "dim": self.dim,
                           "threshold": self.threshold, "model_spec": self.model_spec}, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> CollectionInfo | None:
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, TypeError):
            return None
        if not isinstance(data, dict) or data.get("arcmatch") != 1:
            return None
        return cls(data["model_version"], int(data["dim"]), data.get("threshold"), data.get("model_spec"))


@dataclass(frozen=True)
class FaceRow:
    source: str
    identity: str
    vector: np.ndarray
    face_id: int
    metadata: dict | None = None


@dataclass(frozen=True)
class Hit:
    face_id: int
    identity: str
    score: float  # cosine similarity, higher is closer
    source: str


class FaceIndex:
    """One collection. `consistency` applies to searches: "Strong" (the default) waits until every write before
    the search is visible, which on a Milvus server costs up to a few hundred milliseconds per search; "Session"
    sees this client's own writes at once and others' within moments, which is what a search service wants.

    `search_ef` is HNSW's candidate list size at search time (at least k): recall against exact search rises with
    it and so does latency. bench/search_latency.py --ef measures the trade-off; docs/BENCHMARKS.md has it at 1M.
    """

    def __init__(self, client, collection: str, *, consistency: str = "Strong", search_ef: int = DEFAULT_EF,
                 retry_s: float = 3.0, reconnect: Callable[[], Any] | None = None) -> None:
        if consistency not in ("Strong", "Session", "Bounded", "Eventually"):
            raise InvalidValue(f"consistency must be Strong, Session, Bounded or Eventually, got {consistency!r}")
        if not 1 <= search_ef <= 32768:
            raise InvalidValue(f"search_ef must be between 1 and 32768, got {search_ef}")
        self.client = client
        self.collection = collection
        self.consistency = consistency
        self.search_ef = search_ef
        self.retry_s = retry_s
        self._reconnect, self._renewed_at = reconnect, -1.0
        self._info: CollectionInfo | None = None

    def _call(self, what: str, *args, retry: bool = True, fn=None, **kwargs):
        """One Milvus call with pymilvus's errors translated. Every arcmatch call is idempotent (reads; upserts
        and deletes keyed by face id), so a failure is retried with backoff for up to `retry_s`; a collection the
        server reports as not loaded (after a restart) is loaded again first. What is left is BackendUnavailable
        in the project's words: the foreign text (hosts, ports, addresses, names) goes to the log only."""
        foreign = _foreign_errors()
        deadline, delay = time.monotonic() + (self.retry_s if retry else 0.0), 0.1
        while True:
            try:  # the client's method looked up on each try: a reconnect replaces the client
                return (fn or getattr(self.client, what))(*args, **kwargs)
            except foreign as exc:
                if isinstance(exc, _milvus().exceptions.ParamError):  # refused by pymilvus itself: no use retrying
                    _log_failure(what, "value refused", exc)
                    raise InvalidValue(f"the face store refused a value of this {what}") from exc
                problem = _diagnose(exc)
                _log_failure(what, problem, exc)
                if problem == "collection not loaded" and what != "load_collection":
                    self._reload()
                elif problem in ("unreachable", "no answer in time"):
                    self._renew_client()
                if time.monotonic() + delay > deadline:
                    raise BackendUnavailable(f"the face store failed a {what} ({problem}); try again shortly") from exc
                time.sleep(delay)
                delay = min(2 * delay, 1.0)

    def _renew_client(self) -> None:
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
            _log_failure("reconnect", "unreachable", exc)
            return
        stale, self.client = self.client, fresh
        try:
            stale.close()
        except Exception:  # noqa: BLE001  (a broken client may fail to close; it is dropped either way)
            pass

    def _reload(self) -> None:
        try:
            self.client.load_collection(self.collection, timeout=self.retry_s or None)
        except _foreign_errors() as exc:
            _log_failure("load_collection", _diagnose(exc), exc)

    def check_ready(self, timeout_s: float = 2.0) -> None:
        """Raise BackendUnavailable unless a search on the collection answers now: one quick call, no retries,
        what a readiness probe asks. A search, not the load state: after a server restart the state said Loaded
        ~15 s before searches worked. A collection found unloaded is loaded again."""
        info = self.info()
        probe = np.zeros((1, info.dim), dtype=np.float32)
        probe[0, 0] = 1.0
        self._call("search", self.collection, data=probe.tolist(), limit=1, output_fields=[],
                   search_params={"metric_type": "COSINE", "params": {"ef": 8}}, consistency_level="Eventually",
                   timeout=timeout_s, retry=False)

    def exists(self) -> bool:
        return bool(self._call("has_collection", self.collection))

    def info(self) -> CollectionInfo:
        if self._info is None:
            if not self.exists():
                raise CollectionNotFound(f"collection {self.collection!r} does not exist; ingest a gallery first")
            described = self._call("describe_collection", self.collection)
            info = CollectionInfo.from_json((described.get("properties") or {}).get(INFO_PROPERTY, ""))
            if info is None:
                raise ModelMismatch(f"collection {self.collection!r} was not created by arcmatch")
            # a store restarted after a crash (or a server after release) holds it unloaded; loading is idempotent
            self._call("load_collection", self.collection)
            self._info = info
        return self._info

    def ensure(self, info: CollectionInfo, *, index_type: str = "HNSW") -> None:
        """Create the collection for this model, or check that the existing one was made for the same model."""
        if self.exists():
            existing = self.info()
            if existing.model_version != info.model_version or existing.dim != info.dim:
                raise ModelMismatch(
                    f"collection {self.collection!r} holds vectors of model {existing.model_version} "
                    f"(dim {existing.dim}), not {info.model_version} (dim {info.dim}); "
                    f"use another collection or re-ingest into a new one"
                )
            return
        if index_type not in INDEX_PARAMS:
            raise InvalidValue(f"index type must be one of {sorted(INDEX_PARAMS)}, got {index_type!r}")
        pymilvus = _milvus()
        DataType = pymilvus.DataType
        schema = pymilvus.MilvusClient.create_schema(auto_id=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("identity", DataType.VARCHAR, max_length=256)
        schema.add_field("source", DataType.VARCHAR, max_length=2048)
        schema.add_field("model_version", DataType.VARCHAR, max_length=128)
        schema.add_field("created_at", DataType.INT64)
        schema.add_field("metadata", DataType.JSON)
        schema.add_field(VECTOR, DataType.FLOAT_VECTOR, dim=info.dim)
        index = self.client.prepare_index_params()
        index.add_index(field_name=VECTOR, index_name=VECTOR, index_type=index_type, metric_type="COSINE",
                        params=INDEX_PARAMS[index_type])
        self._call("create_collection", self.collection, schema=schema, retry=False,
                   index_params=index, consistency_level="Strong",
                   properties={INFO_PROPERTY: info.to_json()})
        self._info = info

    def upsert(self, rows: Sequence[FaceRow]) -> int:
        if not rows:
            return 0
        info = self.info()
        now = int(time.time())
        data = []
        for row in rows:
            vector = np.asarray(row.vector, dtype=np.float32)
            if vector.shape != (info.dim,):
                raise InvalidValue(f"vector for {row.source!r} has shape {vector.shape}, expected ({info.dim},)")
            if not np.isfinite(vector).all():
                raise InvalidValue(f"vector for {row.source!r} has a value that is not a finite 32-bit float at "
                                   f"position {int(np.flatnonzero(~np.isfinite(vector))[0])}")
            data.append({"id": validate_face_id(row.face_id), "identity": validate_stored_identity(row.identity),
                         "source": clip_utf8(row.source), "model_version": info.model_version, "created_at": now,
                         "metadata": validate_metadata(row.metadata), VECTOR: vector.tolist()})
        self._call("upsert", self.collection, data)
        return len(data)

    def flush(self) -> None:
        self._call("flush", self.collection)

    def count(self) -> int:
        self.info()
        result = self._call("query", self.collection, filter="", output_fields=["count(*)"])
        return int(result[0]["count(*)"])

    def search(self, vectors: np.ndarray, k: int = 10, ef: int | None = None, *, among: str = "labelled",
               exclude_identity: str | None = None) -> list[list[Hit]]:
        """Top-k faces for each row of `vectors` (L2-normalised, the collection's dimension); `ef` overrides
        the index's search_ef for this call. `among`: "labelled" faces (an identification: a face nobody has
        named is never an answer), "unlabelled" ones (clustering) or "all"; `exclude_identity` leaves one
        identity's faces out."""
        if among not in SEARCH_AMONG:
            raise InvalidValue(f"among must be one of {sorted(SEARCH_AMONG)}, got {among!r}")
        info = self.info()
        vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        if vectors.shape[1] != info.dim:
            raise ModelMismatch(f"query vectors have dim {vectors.shape[1]}, collection {self.collection!r} "
                                f"holds dim {info.dim} ({info.model_version})")
        params = {"metric_type": "COSINE", "params": {"ef": max(ef or self.search_ef, k)}}
        where = [SEARCH_AMONG[among]] if SEARCH_AMONG[among] else []
        if exclude_identity is not None:
            where.append(f"identity != {quote(validate_identity(exclude_identity))}")
        results = self._call("search", self.collection, data=vectors.tolist(), limit=k, filter=" and ".join(where),
                             output_fields=["identity", "source"], search_params=params,
                             consistency_level=self.consistency)
        return [
            [Hit(int(h["id"]), h["entity"]["identity"], float(h["distance"]), h["entity"]["source"]) for h in hits]
            for hits in results
        ]

    def _get(self, ids: list[int], fields: list[str], batch: int = 1000, **options) -> Iterator[dict]:
        """The stored fields of these faces, `batch` ids per read (missing ids are simply absent)."""
        self.info()
        for start in range(0, len(ids), batch):
            chunk = [validate_face_id(int(i)) for i in ids[start : start + batch]]
            yield from self._call("get", self.collection, ids=chunk, output_fields=["id", *fields], **options)

    def vectors(self, ids: list[int], batch: int = 1000) -> dict[int, np.ndarray]:
        """The stored vectors of these faces (missing ids are simply absent from the result)."""
        return {int(r["id"]): np.asarray(r[VECTOR], dtype=np.float32) for r in self._get(ids, [VECTOR], batch)}

    def rows(self, ids: list[int], batch: int = 1000) -> dict[int, FaceRow]:
        """The stored rows of these faces, vectors included (missing ids are absent from the result)."""
        return {int(r["id"]): FaceRow(r["source"], r["identity"], np.asarray(r[VECTOR], dtype=np.float32),
                                      int(r["id"]), r["metadata"] or {})
                for r in self._get(ids, ["identity", "source", "metadata", VECTOR], batch)}

    def stored_metadata(self, ids: list[int], batch: int = 1000, *, strong: bool = False) -> dict[int, dict]:
        """The metadata of these faces, without their vectors: what a writer checks before an upsert (missing ids
        are absent). Bounded consistency by default: a server answers a Strong read only after its next time tick
        (about 200 ms a read, 7x the upsert it guards; bench/rejection_check.py), and what a bulk writer checks (a
        person's "not this person") was written long before, not in the last few seconds. `strong` is for a
        person's own request, which may follow their previous one within a second."""
        rows = self._get(ids, ["metadata"], batch, consistency_level="Strong" if strong else "Bounded")
        return {int(r["id"]): r["metadata"] or {} for r in rows}

    def delete_identity(self, identity: str) -> int:
        """Delete every face of one identity; returns how many there were."""
        expr, page, total = f"identity == {quote(validate_identity(identity))}", 1000, 0
        self.info()
        while True:  # every face, however many, a page at a time (each page is gone before the next is read)
            rows = self._call("query", self.collection, filter=expr, output_fields=["id"],
                              limit=page, consistency_level="Strong")
            if rows:
                self._delete([int(r["id"]) for r in rows])
                total += len(rows)
            if len(rows) < page:
                return total

    def delete_face(self, identity: str, face: int) -> bool:
        """Delete one face, only if it belongs to `identity` (a face id alone never deletes someone else's)."""
        expr = f"id == {validate_face_id(face)} and identity == {quote(validate_identity(identity))}"
        self.info()
        found = self._call("query", self.collection, filter=expr, output_fields=["id"], limit=1)
        if found:
            self._delete([int(face)])
        return bool(found)

    def delete_ids(self, ids: list[int], batch: int = 1000) -> None:
        """Delete these faces whoever they belong to (a re-embed making its collection equal to another)."""
        self.info()
        for start in range(0, len(ids), batch):
            self._delete([validate_face_id(int(i)) for i in ids[start : start + batch]])

    def _delete(self, ids: list[int]) -> None:
        """Delete, and return only once no search can find these faces any more: an erasure that takes effect.

        A Milvus server applies a delete asynchronously, and the 2.3 server answers a delete with timestamp 0, so
        pymilvus's Session consistency (the searches of this service) is not moved past it: right after a delete,
        searches still found the deleted person (Session: 4-62 of 100 rounds; before any fix 100 of 100). A Strong
        query for the ids waits until the query nodes have applied everything up to now, delete included; after it,
        every search sees the delete (0 of 100). It costs one Strong read per delete (300 ms at the median on the
        2.3 server, a time tick or two; nothing on Lite; docs/BENCHMARKS.md)."""
        self._call("delete", self.collection, ids=ids)
        listed = ", ".join(str(i) for i in ids)
        left = self._call("query", self.collection, filter=f"id in [{listed}]",
                          output_fields=["id"], consistency_level="Strong")
        if left:  # not seen in any run; a store that cannot confirm the erasure must not answer that it happened
            raise BackendUnavailable(f"the face store did not confirm the deletion of {len(left)} face(s)")

    def list_identities(self, after: str | None = None, limit: int = 100) -> list[tuple[str, int]]:
        """Identities in name order after the cursor `after`, with their face counts, at most `limit`.

        Milvus has no ORDER BY or DISTINCT, so this scans the identity field of the faces past the cursor; the
        cost grows with the gallery, which is fine for administration, not for a hot path.
        """
        expr = f"identity > {quote(validate_identity(after))}" if after else SEARCH_AMONG["labelled"]
        counts: dict[str, int] = {}
        for row in self._scan(expr, ["identity"]):
            counts[row["identity"]] = counts.get(row["identity"], 0) + 1
        return [(name, counts[name]) for name in sorted(counts)[:limit]]

    def _scan(self, expr: str, fields: list[str], batch: int = SCAN_BATCH) -> Iterator[dict]:
        """Every row matching `expr`, through a query iterator (plain offsets stop at 16,384 rows)."""
        self.info()
        iterator = self._call("query_iterator", self.collection, batch_size=batch,
                              filter=expr, output_fields=fields)
        try:
            while rows := self._call("query_iterator.next", fn=iterator.next):
                yield from rows
        finally:
            iterator.close()

    def faces_of(self, identity: str, limit: int = 1000) -> list[dict]:
        expr = f"identity == {quote(validate_identity(identity))}"
        self.info()
        return self._call("query", self.collection, filter=expr,
                          output_fields=["id", *OUTPUT_FIELDS], limit=limit)

    def labelled_faces(self) -> Iterator[tuple[int, str]]:
        """(face id, identity) of every face that has an identity (unlabelled faces have UNLABELLED)."""
        for row in self._scan(SEARCH_AMONG["labelled"], ["id", "identity"]):
            yield int(row["id"]), row["identity"]

    def unlabelled_faces(self) -> Iterator[tuple[int, str]]:
        """(face id, source) of every face nobody has named yet."""
        for row in self._scan(SEARCH_AMONG["unlabelled"], ["id", "source"]):
            yield int(row["id"]), row["source"]

    def expired_unlabelled(self, now: int) -> list[int]:
        """Unlabelled faces whose metadata's `expires_at` (seconds since the epoch) is before `now`."""
        expr = f"{SEARCH_AMONG['unlabelled']} and metadata[\"expires_at\"] < {int(now)}"
        return [int(r["id"]) for r in self._scan(expr, ["id"])]

    def iter_ids(self) -> Iterator[int]:
        """Every primary key, for checks that each face is present exactly once."""
        yield from (int(r["id"]) for r in self._scan("id >= 0", ["id"]))
