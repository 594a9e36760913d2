"""FaceIndex: one Milvus collection of face embeddings, on Milvus Lite or a Milvus server alike.

The client is passed in (connect() builds one from a URI), so tests, the CLI and the API share this code and
only differ in where they point. The collection records the model it was built for in a collection property
(Milvus Lite drops schema descriptions, properties survive on both stores); writing
or searching with vectors of another model is refused with ModelMismatch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from indexer.errors import BackendUnavailable, CollectionNotFound, InvalidValue, ModelMismatch
from indexer.ids import (
    UNLABELLED,
    clip_utf8,
    quote,
    validate_cursor,
    validate_face_id,
    validate_identity,
    validate_metadata,
    validate_stored_identity,
)
from indexer.milvus import Milvus, Property, library
from indexer.milvus import connect as connect  # where every caller has found it
from indexer.milvus import is_lite_uri as is_lite_uri
from indexer.records import CollectionInfo, FaceRow, Hit  # noqa: F401  (where every caller has found them)

VECTOR = "vector"
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


class FaceIndex:
    """One collection. `consistency` applies to searches: "Strong" (the default) waits until every write before
    the search is visible, which on a Milvus server costs up to a few hundred milliseconds per search; "Session"
    sees this client's own writes at once and others' within moments, which is what a search service wants.

    `search_ef` is HNSW's candidate list size at search time (at least k): recall against exact search rises with
    it and so does latency. bench/search_latency.py --ef measures the trade-off; docs/BENCHMARKS.md has it at 1M.
    """

    def __init__(self, client, collection: str, *, consistency: str = "Strong", search_ef: int = DEFAULT_EF,
                 retry_s: float = 3.0, reconnect: Callable[[], Any] | None = None,
                 info: CollectionInfo | None = None) -> None:
        if consistency not in ("Strong", "Session", "Bounded", "Eventually"):
            raise InvalidValue(f"consistency must be Strong, Session, Bounded or Eventually, got {consistency!r}")
        if not 1 <= search_ef <= 32768:
            raise InvalidValue(f"search_ef must be between 1 and 32768, got {search_ef}")
        self.collection = collection
        self.consistency = consistency
        self.search_ef = search_ef
        self.milvus = Milvus(client, retry_s=retry_s, reconnect=reconnect, loads=collection)
        # given where the caller has just read the collection's record (a listing of galleries): not read again, and
        # the collection is loaded when a call finds it unloaded (`loads`), not before
        self._info: CollectionInfo | None = info

    @property
    def client(self):
        """The client in use now: a fresh one replaces it after the store was unreachable (indexer/milvus.py)."""
        return self.milvus.client

    def properties(self) -> dict[Property, str]:
        """arcmatch's properties of this collection, read afresh (another process may have set one)."""
        return self.milvus.properties(self.collection)

    def set_properties(self, values: dict[Property, str]) -> None:
        self.milvus.set_properties(self.collection, values)

    def check_ready(self, timeout_s: float = 2.0) -> None:
        """Raise BackendUnavailable unless a search on the collection answers now: one quick call, no retries,
        what a readiness probe asks. A search, not the load state: after a server restart the state said Loaded
        ~15 s before searches worked. A collection found unloaded is loaded again."""
        info = self.info()
        probe = np.zeros((1, info.dim), dtype=np.float32)
        probe[0, 0] = 1.0
        self.milvus("search", self.collection, data=probe.tolist(), limit=1, output_fields=[],
                    search_params={"metric_type": "COSINE", "params": {"ef": 8}}, consistency_level="Eventually",
                    timeout=timeout_s, retry=False)

    def exists(self) -> bool:
        return bool(self.milvus("has_collection", self.collection))

    def info(self) -> CollectionInfo:
        if self._info is None:
            if not self.exists():
                raise CollectionNotFound(f"collection {self.collection!r} does not exist; ingest a gallery first")
            info = CollectionInfo.from_json(self.properties().get(Property.INFO, ""))
            if info is None:
                raise ModelMismatch(f"collection {self.collection!r} was not created by arcmatch")
            # a store restarted after a crash (or a server after release) holds it unloaded; loading is idempotent
            self.milvus("load_collection", self.collection)
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
            if info.reference and not existing.reference:  # the same model, evaluated since the collection was made
                self.set_properties({Property.INFO: replace(existing, reference=info.reference).to_json()})
                self._info = None
            return
        if index_type not in INDEX_PARAMS:
            raise InvalidValue(f"index type must be one of {sorted(INDEX_PARAMS)}, got {index_type!r}")
        pymilvus = library()
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
        self.milvus("create_collection", self.collection, schema=schema, retry=False,
                    index_params=index, consistency_level="Strong",
                    properties={Property.INFO.value: info.to_json()})
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
        self.milvus("upsert", self.collection, data)
        return len(data)

    def flush(self) -> None:
        self.milvus("flush", self.collection)

    def count(self, *, consistency: str | None = None) -> int:
        """The faces held. `consistency`: the collection's own (Strong) unless said; a listing of many galleries
        says "Session" (this client's writes seen at once, others' within moments), as each Strong count waits
        about 200 ms on the 2.3 server (docs/BENCHMARKS.md)."""
        self.info()
        level = {"consistency_level": consistency} if consistency else {}
        result = self.milvus("query", self.collection, filter="", output_fields=["count(*)"], **level)
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
        results = self.milvus("search", self.collection, data=vectors.tolist(), limit=k, filter=" and ".join(where),
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
            yield from self.milvus("get", self.collection, ids=chunk, output_fields=["id", *fields], **options)

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
        return {face: metadata for face, (_, metadata) in self.stored_records(ids, batch, strong=strong).items()}

    def stored_records(self, ids: list[int], batch: int = 1000, *, strong: bool = False) -> dict[int, tuple[str, dict]]:
        """(identity, metadata) of these faces, read as stored_metadata reads: a writer that must know whom a face
        is filed under now (a person may have merged or moved it since it was written)."""
        rows = self._get(ids, ["identity", "metadata"], batch, consistency_level="Strong" if strong else "Bounded")
        return {int(r["id"]): (r["identity"], r["metadata"] or {}) for r in rows}

    def delete_identity(self, identity: str) -> int:
        """Delete every face of one identity; returns how many there were."""
        expr, page, total = f"identity == {quote(validate_identity(identity))}", 1000, 0
        self.info()
        while True:  # every face, however many, a page at a time (each page is gone before the next is read)
            rows = self.milvus("query", self.collection, filter=expr, output_fields=["id"],
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
        found = self.milvus("query", self.collection, filter=expr, output_fields=["id"], limit=1)
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
        self.milvus("delete", self.collection, ids=ids)
        listed = ", ".join(str(i) for i in ids)
        left = self.milvus("query", self.collection, filter=f"id in [{listed}]",
                           output_fields=["id"], consistency_level="Strong")
        if left:  # not seen in any run; a store that cannot confirm the erasure must not answer that it happened
            raise BackendUnavailable(f"the face store did not confirm the deletion of {len(left)} face(s)")

    def list_identities(self, after: str | None = None, limit: int = 100) -> list[tuple[str, int]]:
        """Identities in name order after the cursor `after`, with their face counts, at most `limit`.

        Milvus has no ORDER BY or DISTINCT, so this scans the identity field of the faces past the cursor; the
        cost grows with the gallery, which is fine for administration, not for a hot path.
        """
        expr = f"identity > {quote(validate_cursor(after))}" if after else SEARCH_AMONG["labelled"]
        counts: dict[str, int] = {}
        for row in self._scan(expr, ["identity"]):
            counts[row["identity"]] = counts.get(row["identity"], 0) + 1
        return [(name, counts[name]) for name in sorted(counts)[:limit]]

    def _scan(self, expr: str, fields: list[str], batch: int = SCAN_BATCH) -> Iterator[dict]:
        """Every row matching `expr`, through a query iterator (plain offsets stop at 16,384 rows)."""
        self.info()
        iterator = self.milvus("query_iterator", self.collection, batch_size=batch,
                               filter=expr, output_fields=fields)
        try:
            while rows := self.milvus("query_iterator.next", fn=iterator.next):
                yield from rows
        finally:
            iterator.close()

    def faces_of(self, identity: str, limit: int = 1000) -> list[dict]:
        expr = f"identity == {quote(validate_identity(identity))}"
        self.info()
        return self.milvus("query", self.collection, filter=expr,
                           output_fields=["id", *OUTPUT_FIELDS], limit=limit)

    def labelled_faces(self) -> Iterator[tuple[int, str]]:
        """(face id, identity) of every face that has an identity (unlabelled faces have UNLABELLED)."""
        for row in self._scan(SEARCH_AMONG["labelled"], ["id", "identity"]):
            yield int(row["id"]), row["identity"]

    def labelled_sources(self) -> Iterator[tuple[int, str, str]]:
        """(face id, identity, source) of every face that has an identity."""
        for row in self._scan(SEARCH_AMONG["labelled"], ["id", "identity", "source"]):
            yield int(row["id"]), row["identity"], row["source"]

    def unlabelled_faces(self) -> Iterator[tuple[int, str]]:
        """(face id, source) of every face nobody has named yet."""
        for row in self._scan(SEARCH_AMONG["unlabelled"], ["id", "source"]):
            yield int(row["id"]), row["source"]

    def expired_unlabelled(self, now: int) -> list[int]:
        """Unlabelled faces whose metadata's `expires_at` (seconds since the epoch) is before `now`."""
        expr = f"{SEARCH_AMONG['unlabelled']} and metadata[\"expires_at\"] < {int(now)}"
        return [int(r["id"]) for r in self._scan(expr, ["id"])]

    def identities(self) -> Iterator[tuple[int, str]]:
        """(face id, identity) of every face, unlabelled ones (UNLABELLED) too."""
        for row in self._scan("id >= 0", ["id", "identity"]):
            yield int(row["id"]), row["identity"]

    def iter_ids(self) -> Iterator[int]:
        """Every primary key, for checks that each face is present exactly once."""
        yield from (int(r["id"]) for r in self._scan("id >= 0", ["id"]))
