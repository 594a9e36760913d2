"""The identity service: one-shot lookup ("identity X" or "unknown") and gallery administration, without HTTP.

The CLI's `search`, the demo, the API's routes and Ray Serve's batcher all search and decide through this class,
so a threshold, a k or a model check means the same everywhere. The threshold defaults to the one calibrated with
the model (stored in its checkpoint, copied into the collection), so a lookup needs no number typed in.

Faces enrolled through the API are keyed by identity and image content (SHA-256), so enrolling the same photo
twice is one face, not two, and a retried request is harmless.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from embedder.embed import Embedder
from embedder.errors import ModelError
from embedder.preprocess import decode_image
from indexer.decision import Decision, decide
from indexer.errors import InvalidValue, ModelMismatch
from indexer.ids import face_id, validate_identity
from indexer.store import FaceIndex, FaceRow, Hit


@dataclass(frozen=True)
class Enrolled:
    identity: str
    face_ids: list[int]


class IdentityService:
    def __init__(self, embedder: Embedder, index: FaceIndex, *, k: int = 20, max_pixels: int = 40_000_000) -> None:
        info = index.info()
        if info.model_version != embedder.spec.version:
            raise ModelMismatch(f"gallery {index.collection!r} was built with model {info.model_version}, "
                                f"but this model is {embedder.spec.version}")
        self.embedder = embedder
        self.index = index
        self.k = k
        self.max_pixels = max_pixels

    @classmethod
    def open(cls, settings, *, create: bool = False) -> IdentityService:
        """The service a configuration describes (jobs.settings.Settings). `create` makes the collection for this
        model when it does not exist yet (the API, which can enroll into an empty gallery)."""
        from embedder.embed import open_embedder
        from indexer.store import CollectionInfo, connect

        embedder = open_embedder(settings.require("model").model)
        index = FaceIndex(connect(settings.milvus_uri, settings.token()), settings.collection,
                          consistency=settings.search_consistency, search_ef=settings.search_ef)
        if create:
            spec, calibration = embedder.spec, embedder.calibration
            index.ensure(CollectionInfo(spec.version, spec.embedding_size,
                                        calibration.threshold if calibration else None, spec.to_dict()))
        return cls(embedder, index, k=settings.search_k, max_pixels=settings.max_pixels)

    def close(self) -> None:
        self.index.client.close()

    # searching
    def decode(self, data: bytes) -> np.ndarray:
        return decode_image(data, self.embedder.spec, max_pixels=self.max_pixels)

    def embed_images(self, images: list[bytes]) -> np.ndarray:
        return self.embedder.embed(np.stack([self.decode(data) for data in images]))

    def check_vectors(self, vectors) -> np.ndarray:
        """Caller-given embeddings as unit float32 rows of the model's dimension, or InvalidValue."""
        vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        if vectors.ndim != 2 or vectors.shape[1] != self.embedder.spec.embedding_size:
            raise InvalidValue(f"embeddings must have {self.embedder.spec.embedding_size} values each")
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        if not np.isfinite(vectors).all() or (norms == 0).any():
            raise InvalidValue("embeddings must be finite and non-zero")
        return vectors / norms

    def threshold(self, threshold: float | None = None) -> float:
        """The caller's threshold, else the model's calibrated one, else the one stored with the collection."""
        if threshold is not None:
            return threshold
        if self.embedder.calibration is not None:
            return self.embedder.calibration.threshold
        stored = self.index.info().threshold
        if stored is not None:
            return stored
        raise ModelError("the model has no calibrated threshold: run `arcmatch eval --calibrate` or pass --threshold")

    def decide(self, hits: list[Hit], threshold: float | None = None, k: int | None = None,
               top_n: int = 1) -> Decision:
        """The decision for one probe from its hits (searched with at least k): the best identity, or unknown."""
        return decide(hits[: k or self.k], self.threshold(threshold), top_n)

    def search_vectors(self, vectors, threshold: float | None = None, k: int | None = None,
                       top_n: int = 1) -> list[Decision]:
        hits = self.index.search(self.check_vectors(vectors), k=k or self.k)
        return [self.decide(h, threshold, k, top_n) for h in hits]

    def search_images(self, images: list[bytes], threshold: float | None = None, k: int | None = None,
                      top_n: int = 1) -> list[Decision]:
        return self.search_vectors(self.embed_images(images), threshold, k, top_n)

    # the gallery
    def enroll(self, identity: str, images: list[tuple[str, bytes]], metadata: dict | None = None) -> Enrolled:
        identity = validate_identity(identity)
        vectors = self.embed_images([data for _, data in images])  # all decode, or nothing is written
        rows = []
        for (name, data), vector in zip(images, vectors, strict=True):
            digest = hashlib.sha256(data).hexdigest()
            rows.append(FaceRow(f"api:{name[:200]}", identity, vector, face_id(f"{identity}\x00{digest}"),
                                {**(metadata or {}), "sha256": digest}))
        self.index.upsert(rows)
        return Enrolled(identity, [r.face_id for r in rows])

    def identity(self, identity: str) -> list[dict]:
        return self.index.faces_of(identity)

    def delete_identity(self, identity: str) -> int:
        return self.index.delete_identity(identity)

    def delete_face(self, identity: str, face: int) -> bool:
        return self.index.delete_face(identity, face)

    def list_identities(self, cursor: str | None, limit: int) -> tuple[list[tuple[str, int]], str | None]:
        page = self.index.list_identities(cursor, limit + 1)
        more = len(page) > limit
        page = page[:limit]
        return page, (page[-1][0] if more and page else None)

    def ready(self) -> dict:
        info = self.index.info()
        return {"collection": self.index.collection, "model_version": info.model_version, "dim": info.dim}
