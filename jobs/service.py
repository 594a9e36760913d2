"""The identity service: one-shot lookup ("identity X" or "unknown") and gallery administration, without HTTP.

The CLI's `search`, the demo, the API's routes and Ray Serve's batcher all search and decide through this class,
so a threshold, a k, a model check or a face policy means the same everywhere. The threshold defaults to the one
calibrated with the model (stored in its checkpoint, copied into the collection), so a lookup needs no number
typed in. Photos become faces through one FacePolicy (embedder/faces.py): detection and five-point alignment for
models that want aligned faces, the spec's crop for the others.

Faces enrolled through the API are keyed by identity and image content (SHA-256), so enrolling the same photo
twice is one face, not two, and a retried request is harmless.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, replace

import numpy as np

from common.errors import Conflict, NotFound, Unavailable
from embedder.archiving import kept_face, thumbnail
from embedder.embed import Embedder
from embedder.errors import ImageError, ModelError
from embedder.faces import FacePolicy, NoFace, PreparedFace, face_record  # noqa: F401  (re-exported)
from embedder.preprocess import load_rgb
from embedder.quality import QualityGate
from indexer import calibration
from indexer.archive import ArchivedFace, FaceArchive
from indexer.calibration import GalleryCalibration
from indexer.decision import Decision, decide
from indexer.errors import BackendUnavailable, GalleryMoved, InvalidValue, ModelMismatch
from indexer.galleries import Galleries
from indexer.ids import FLOAT32_MAX, UNLABELLED, face_id, validate_face_id, validate_identity, validate_metadata
from indexer.store import FaceIndex, FaceRow, Hit
from jobs.calibration_watch import CalibrationWatch, keep_and_audit

PURGE_EVERY_S = 3600.0  # how often a service that keeps unknown faces deletes the expired ones
READY_CACHE_S = 1.0  # how long a readiness answer stands before the store is asked again
CALIBRATION_CACHE_S = 10.0  # how long the gallery's calibration stands before it is read again


def rejected_from(metadata: dict | None) -> list[str]:
    """The identities a face was taken out of ("not this person"), from its metadata."""
    return list((metadata or {}).get("rejected_from") or [])


def carry_rejections(row: FaceRow, stored: dict | None) -> FaceRow:
    """The row about to overwrite a stored face, keeping the face's rejections (`stored` is its metadata) other
    than the row's own identity in its metadata, so the upsert does not erase a person's "not this person"."""
    others = [name for name in rejected_from(stored) if name != row.identity]
    return replace(row, metadata={**row.metadata, "rejected_from": others}) if others else row


def check_rejections(rows: list[FaceRow], stored: dict[int, dict]) -> list[tuple[FaceRow, bool]]:
    """Each row as it may overwrite its stored face (carrying the face's other rejections), and whether a person
    took that face out of the row's own identity. `stored` maps face ids to their metadata. The one rule for both
    writers, which differ only in what they do with such a row: ingestion skips it with the reason, enrollment
    refuses it unless told to proceed."""
    checked = []
    for row in rows:
        metadata = stored.get(row.face_id)
        checked.append((carry_rejections(row, metadata), row.identity in rejected_from(metadata)))
    return checked


def purge_expired(index: FaceIndex, archive: FaceArchive | None, now: float | None = None) -> int:
    """Delete the unlabelled faces kept from searches whose retention has passed (their metadata's expires_at),
    from the archive (a tombstone first, as every delete) and from the store; returns how many."""
    expired = index.expired_unlabelled(int(now if now is not None else time.time()))
    if expired:
        if archive is not None:
            archive.forget(identity=None, face_ids=expired)
        index.delete_ids(expired)
    return len(expired)


@dataclass(frozen=True)
class Enrolled:
    identity: str
    face_ids: list[int]


@dataclass(frozen=True)
class FaceMatch:
    """One face of a probe photo (where it is, how good it is) and the decision for it."""

    face: PreparedFace
    decision: Decision


class IdentityService:
    def __init__(self, embedder: Embedder, index: FaceIndex, *, policy: FacePolicy | None = None, k: int = 20,
                 max_pixels: int = 40_000_000, archive: FaceArchive | None = None,
                 galleries: Galleries | None = None, conflict_check: bool = True,
                 watch: CalibrationWatch | None = None) -> None:
        info = index.info()
        if info.model_version != embedder.spec.version:
            raise ModelMismatch(f"gallery {index.collection!r} was built with model {info.model_version}, "
                                f"but this model is {embedder.spec.version}")
        policy = policy or FacePolicy()
        if embedder.spec.alignment != "none" and policy.detector is None:
            raise ModelError(f"the model wants {embedder.spec.alignment} aligned faces: set ARCMATCH_DETECTOR to a "
                             f"YuNet .onnx face detector")
        self.embedder = embedder
        self.index = index
        self.policy = policy
        self.k = k
        self.max_pixels = max_pixels
        self.archive = archive  # every enrolled face's image, for the next model (None: not kept)
        self.galleries = galleries  # the gallery's alias: which model is in service (None: a bare collection)
        self.conflict_check = conflict_check  # a face matching another identity is refused unless `proceed`
        self._ready_checked, self._not_ready, self._serving = -READY_CACHE_S, None, index.collection
        self._writable = True
        self._calibration, self._calibration_read = None, -CALIBRATION_CACHE_S
        self._purged_at = -float("inf")
        self.watch = watch or CalibrationWatch(index, recalibrate=False)  # the gallery's size, for its calibration

    @classmethod
    def open(cls, settings, *, create: bool = False) -> IdentityService:
        """The service a configuration describes (jobs.settings.Settings). `create` makes the collection for this
        model when it does not exist yet (the API, which can enroll into an empty gallery)."""
        from embedder.embed import open_embedder
        from indexer.store import CollectionInfo, connect, is_lite_uri

        embedder = open_embedder(settings.require("model").model)
        policy = settings.face_policy()
        uri, token = settings.milvus_uri, settings.token()
        reconnect = None if is_lite_uri(uri) else (lambda: connect(uri, token, timeout=2.0))
        spec, calibration = embedder.spec, embedder.calibration
        galleries = Galleries(connect(uri, token), settings.collection)
        index = galleries.open(CollectionInfo(spec.version, spec.embedding_size,
                                              calibration.threshold if calibration else None, spec.to_dict()),
                               create=create, consistency=settings.search_consistency,
                               search_ef=settings.search_ef, reconnect=reconnect)
        root = settings.archive_root()
        archive = FaceArchive(root, settings.collection) if root else None
        watch = CalibrationWatch(index, every_s=settings.calibration_check_s,
                                 recalibrate=settings.recalibrate_on_growth)
        service = cls(embedder, index, policy=policy, k=settings.search_k, max_pixels=settings.max_pixels,
                      archive=archive, galleries=galleries, conflict_check=settings.enroll_conflict_check, watch=watch)
        watch.kept = keep_and_audit(service.set_gallery_calibration, settings)
        return service

    def close(self) -> None:
        self.index.client.close()

    # photos -> faces
    def load(self, data: bytes) -> np.ndarray:
        """Encoded bytes -> the full-resolution RGB photo (EXIF applied, size limits checked)."""
        return load_rgb(data, max_pixels=self.max_pixels)

    def probe_faces(self, photo: np.ndarray, select: str = "all") -> list[PreparedFace]:
        """The faces of a probe photo, each with its quality: "all" (every face found, best score first, those
        below the quality gate included and marked) or "largest". NoFace when there is none."""
        found = self.policy.examine(photo, self.embedder.spec)
        if not found:
            raise NoFace("no face found in the image")
        if select == "largest":
            return [max(found, key=lambda f: f.face.area)]
        return found

    def embed_faces(self, faces: list[PreparedFace]) -> np.ndarray:
        return self.embedder.embed(np.stack([f.chip for f in faces]))

    # searching
    def check_vectors(self, vectors) -> np.ndarray:
        """Caller-given embeddings as unit float32 rows of the model's dimension, or InvalidValue."""
        dim = self.embedder.spec.embedding_size
        try:
            vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float64))
        except (ValueError, TypeError):  # ragged rows, or not numbers at all
            raise InvalidValue(f"embeddings must have {dim} values each") from None
        if vectors.ndim != 2 or vectors.shape[1] != dim:
            raise InvalidValue(f"embeddings must have {dim} values each")
        bad = np.argwhere(~(np.abs(vectors) <= FLOAT32_MAX))  # 1e39 is finite in JSON, infinite as a float32
        if bad.size:
            row, column = (int(v) for v in bad[0])
            raise InvalidValue(f"embeddings[{row}][{column}] is {float(vectors[row, column])!r}: every value must be "
                               f"a finite 32-bit float (magnitude at most {FLOAT32_MAX!r})")
        scale = np.abs(vectors).max(axis=1, keepdims=True)
        if (scale == 0).any():
            raise InvalidValue(f"embeddings[{int(np.flatnonzero(scale == 0)[0])}] is all zeros: it has no direction")
        scaled = vectors / scale  # first: no overflow or underflow in the norm, whatever the magnitudes
        return (scaled / np.linalg.norm(scaled, axis=1, keepdims=True)).astype(np.float32)

    def threshold(self, threshold: float | None = None, fpir: float | None = None) -> float:
        """The caller's threshold, or the one for the caller's FPIR at the gallery's size (read from the gallery
        calibration's curve), else the gallery's own calibration (`arcmatch calibrate`), else the model's
        calibrated one, else the one stored with the collection."""
        if threshold is not None and fpir is not None:
            raise InvalidValue("give a threshold or an FPIR, not both")
        if threshold is not None:
            return threshold
        if fpir is not None:
            found = self.gallery_calibration()
            if found is None:
                raise InvalidValue("an FPIR needs the gallery's calibration (`arcmatch calibrate`), which this "
                                   "gallery has not got: give a threshold")
            return found.threshold_for_fpir(fpir, self.watch.size(found))
        return self.threshold_in_use()[0]

    def threshold_in_use(self) -> tuple[float, str]:
        """(threshold, where it comes from: "gallery", "model" or "collection")."""
        gallery = self.gallery_calibration()
        if gallery is not None:
            return gallery.threshold, "gallery"
        if self.embedder.calibration is not None:
            return self.embedder.calibration.threshold, "model"
        stored = self.index.info().threshold
        if stored is not None:
            return stored, "collection"
        raise ModelError("the model has no calibrated threshold: run `arcmatch eval --calibrate` or "
                         "`arcmatch calibrate`, or pass --threshold")

    def gallery_calibration(self) -> GalleryCalibration | None:
        """The collection's own calibration, read again every CALIBRATION_CACHE_S (another process, or another
        replica, may set or clear it); while the store cannot be asked, the last one read stands."""
        now = time.monotonic()
        if now - self._calibration_read >= CALIBRATION_CACHE_S:
            try:
                self._calibration = calibration.stored(self.index)
                self._calibration_read = now
            except BackendUnavailable:
                pass
        return self._calibration

    def calibrate(self, target_fpir: float, *, sample: int = 5000, save: bool = True,
                  method: str = "tail") -> GalleryCalibration:
        """Choose the gallery's threshold for `target_fpir` from its stored vectors (indexer/calibration.py) and,
        with `save`, keep it with the collection so every process searching it uses it."""
        model = self.embedder.calibration.threshold if self.embedder.calibration else self.index.info().threshold
        result = calibration.calibrate(self.index, target_fpir, model_threshold=model, sample=sample, method=method)
        if save:
            self.set_gallery_calibration(result)
        return result

    def set_gallery_calibration(self, result: GalleryCalibration | None) -> None:
        self._check_in_service()
        calibration.store(self.index, result)
        self._calibration, self._calibration_read = result, time.monotonic()

    def decide(self, hits: list[Hit], threshold: float | None = None, k: int | None = None,
               top_n: int = 1) -> Decision:
        """The decision for one probe from its hits (searched with at least k): the best identity, or unknown."""
        return decide(hits[: k or self.k], self.threshold(threshold), top_n)

    def search_vectors(self, vectors, threshold: float | None = None, k: int | None = None,
                       top_n: int = 1) -> list[Decision]:
        return self.search_checked(self.check_vectors(vectors), [(threshold, k, top_n)] * len(vectors))

    def search_checked(self, vectors: np.ndarray, queries: list[tuple[float | None, int | None, int]]
                       ) -> list[Decision]:
        """The one search-and-decide every caller ends in (a request's faces, Ray Serve's batch of requests):
        vectors already checked (check_vectors), one search with the largest k asked, then each decided with its
        own (threshold, k, top_n), so a batch never changes an answer."""
        hits = self.index.search(vectors, k=max(k or self.k for _, k, _ in queries))
        return [self.decide(h, threshold, k, top_n) for h, (threshold, k, top_n) in zip(hits, queries, strict=True)]

    def identify(self, images: list[bytes], threshold: float | None = None, k: int | None = None, top_n: int = 1,
                 select: str = "all") -> list[list[FaceMatch]]:
        """For each photo, a decision per face (select "all") or for its largest face; one model call and one
        search for the whole list. A photo without a face raises NoFace naming its position in the list."""
        faces: list[list[PreparedFace]] = []
        for n, data in enumerate(images):
            try:
                faces.append(self.probe_faces(self.load(data), select))
            except NoFace as exc:
                raise NoFace(f"image {n + 1}: {exc}" if len(images) > 1 else str(exc)) from None
        flat = [f for per_image in faces for f in per_image]
        decisions = iter(self.search_vectors(self.embed_faces(flat), threshold, k, top_n))
        return [[FaceMatch(f, next(decisions)) for f in per_image] for per_image in faces]

    def face_image(self, face: int) -> bytes:
        """A thumbnail (JPEG) of a face from the archive, for people to look at; NotFound without one."""
        face = validate_face_id(face)
        kept = self.archive.image(face) if self.archive is not None else None
        if kept is None:
            raise NotFound(f"no image is kept for face {face} (deleted, or enrolled before the face archive)")
        return thumbnail(kept[1], kept[0], self.embedder.spec.crop_box)

    # faces nobody has named
    def keep_unknown(self, data: bytes, faces: list[PreparedFace], vectors: np.ndarray, decisions: list[Decision],
                     retention_days: float) -> list[int]:
        """Keep the faces of a probe photo that were answered unknown and pass the quality gate, unlabelled, for
        `arcmatch cluster` (ARCMATCH_KEEP_UNKNOWN_FACES, off by default: this is personal data). Each is
        keyed by the photo's content and the face's place in it, so a photo searched twice is kept once, and
        carries `expires_at` (purge_expired deletes it then). Returns the face ids kept."""
        chosen = [n for n, (face, d) in enumerate(zip(faces, decisions, strict=True)) if not d.is_match and face.passed]
        if not chosen:
            return []
        self._check_in_service()
        digest, now = hashlib.sha256(data).hexdigest(), time.time()
        rows, kept = [], []
        photo = self.load(data) if self.archive is not None else None
        for n in chosen:
            face = faces[n]
            extra = {"kept_from": "search", "sha256": digest, "kept_at": int(now),
                     "expires_at": int(now + retention_days * 86400)}
            if self.embedder.spec.alignment != "none":
                extra["face"] = face_record(face)
            key = f"search\x00{digest}\x00{n}"
            rows.append(FaceRow(f"search:{digest[:16]}#{n}", UNLABELLED, vectors[n], face_id(key), extra))
            if photo is not None:
                image, kind = kept_face(photo, face, self.embedder.spec, self.policy)
                kept.append(ArchivedFace(rows[-1].face_id, UNLABELLED, rows[-1].source, json.dumps(extra), kind,
                                         image))
        if self.archive is not None:
            self.archive.write(kept)
        self.index.upsert(rows)
        return [r.face_id for r in rows]

    def purge_expired(self, now: float | None = None, every_s: float = 0.0) -> int:
        """Delete the kept unknown faces whose retention has passed; with `every_s`, at most that often."""
        started = time.monotonic()
        if every_s and started - self._purged_at < every_s:
            return 0
        self._check_in_service()
        self._purged_at = started
        return purge_expired(self.index, self.archive, now)

    # the gallery
    def check_conflicts(self, vectors: np.ndarray, identity: str) -> None:
        """Conflict (409) when any of these faces matches another named identity above the threshold: enrolling
        it as `identity` would make two people one, or a typo a second person."""
        for decision in self.search_vectors(vectors):
            if decision.is_match and decision.identity != identity:
                raise Conflict(f"a face matches {decision.identity!r} (score {decision.score:.3f}, threshold "
                               f"{decision.threshold:.3f}): say proceed to enroll it as {identity!r} anyway")

    def enroll(self, identity: str, images: list[tuple[str, bytes]], metadata: dict | None = None, *,
               select: str | None = None, gate: bool = True, proceed: bool = False) -> Enrolled:
        """Enroll every photo's face(s) by the policy's rule (default: exactly one face that passes the quality
        gate); `gate=False` takes faces below the gate too. All photos are checked before anything is written.
        Each face's image goes to the archive before its vector goes to the store: a face the store holds can
        always be embedded again by the next model. Unless `proceed`: a face that matches another identity, or a
        photo whose face was rejected from this identity ("not this person"), is a Conflict."""
        identity = validate_identity(identity)
        self._check_in_service()
        policy = replace(self.policy, select=select or self.policy.select)
        if not gate:
            policy = replace(policy, gate=QualityGate.open())
        prepared, kept = [], []
        for name, data in images:
            try:
                photo = self.load(data)
                faces = policy.prepare(photo, self.embedder.spec)
            except ImageError as exc:  # the same kind (no face, too many, unreadable), naming the photo
                raise type(exc)(f"{name}: {exc}") from None
            prepared.append((name, data, faces))
            if self.archive is not None:
                kept += [kept_face(photo, face, self.embedder.spec, self.policy) for face in faces]
        embedded = self.embed_faces([f for _, _, faces in prepared for f in faces])
        vectors = iter(embedded)
        rows = []
        for name, data, faces in prepared:
            digest = hashlib.sha256(data).hexdigest()
            for n, face in enumerate(faces):
                key = f"{identity}\x00{digest}" + (f"\x00{n}" if len(faces) > 1 else "")
                extra = {**(metadata or {}), "sha256": digest}
                if self.embedder.spec.alignment != "none":
                    # the record judges the face by the service's gate even when the caller overrode it, so a
                    # face enrolled below the gate says so (passed false, its reasons) and that it was overridden
                    judged = replace(face, reasons=tuple(self.policy.gate.reasons(face.quality)))
                    extra["face"] = {**face_record(judged), **({} if gate else {"quality_override": True})}
                rows.append(FaceRow(f"api:{name[:200]}", identity, next(vectors), face_id(key), extra))
        rows = self._keep_rejections(rows, identity, proceed)  # first: "not this person" is the more exact reason
        if self.conflict_check and not proceed:
            self.check_conflicts(embedded, identity)
        for row in rows:  # before the archive: a row the store would refuse must not be archived either
            validate_metadata(row.metadata)
        if self.archive is not None:
            self.archive.write([ArchivedFace(r.face_id, identity, r.source, json.dumps(r.metadata, ensure_ascii=False),
                                             kind, image) for r, (image, kind) in zip(rows, kept, strict=True)])
        self.index.upsert(rows)
        self.watch.poke(self.gallery_calibration)  # the gallery grew: is its calibration still right?
        return Enrolled(identity, [r.face_id for r in rows])

    def _keep_rejections(self, rows: list[FaceRow], identity: str, proceed: bool) -> list[FaceRow]:
        """A photo's face id derives from the identity and the photo, so enrolling a photo again reaches the face
        stored for it. If a person said that face is not `identity`, it is a Conflict unless `proceed`, whatever
        the face is named since (as promotion and ingestion do); the face's other rejections stay with it."""
        checked = check_rejections(rows, self.index.stored_metadata([r.face_id for r in rows], strong=True))
        refused = next((row for row, rejected in checked if rejected), None)
        if refused is not None and not proceed:
            raise Conflict(f"{refused.source.removeprefix('api:')}: this face was rejected from {identity!r} "
                           "(not this person); say proceed to enroll it anyway")
        return [row for row, _ in checked]

    def identity(self, identity: str) -> list[dict]:
        return self.index.faces_of(identity)

    def delete_identity(self, identity: str) -> int:
        """Every face of the identity, from the archive (a tombstone first: a re-embed never brings it back) and
        from the store."""
        identity = validate_identity(identity)
        self._check_in_service()
        if self.archive is not None:
            self.archive.forget(identity=identity)
        return self.index.delete_identity(identity)

    def delete_face(self, identity: str, face: int) -> bool:
        identity, face = validate_identity(identity), validate_face_id(face)
        self._check_in_service()
        if self.archive is not None:
            self.archive.forget(identity=identity, face_ids=[face])
        return self.index.delete_face(identity, face)

    def list_identities(self, cursor: str | None, limit: int) -> tuple[list[tuple[str, int]], str | None]:
        page = self.index.list_identities(cursor, limit + 1)
        more = len(page) > limit
        page = page[:limit]
        return page, (page[-1][0] if more and page else None)

    def ready(self) -> dict:
        """What the service serves, once the store answers with the collection loaded; BackendUnavailable
        otherwise. The store is asked at most every READY_CACHE_S, so a busy probe costs nothing extra.
        `in_service` is false when the gallery's alias has moved to another model's collection: this process
        still answers searches from its own, and refuses writes until it is replaced by one of the new model."""
        self._refresh()
        if self._not_ready is not None:
            raise BackendUnavailable(self._not_ready)
        info = self.index.info()
        out = {"collection": self.index.collection, "model_version": info.model_version, "dim": info.dim}
        if self.galleries is not None:
            out.update(gallery=self.galleries.gallery, in_service=self._serving == self.index.collection,
                       gallery_serves=self._serving)
        self.watch.poke(self.gallery_calibration)
        return {**out, "calibration": self.watch.status(self.gallery_calibration())}

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._ready_checked < READY_CACHE_S:
            return
        try:
            self.index.check_ready()
            if self.galleries is not None:
                self._serving = self.galleries.serving()
                self._writable = self._serving == self.index.collection or (
                    self.galleries.migrating_from(self.index.collection) == self._serving)
            self._not_ready = None
        except Unavailable as exc:
            self._not_ready = str(exc)
        self._ready_checked = now

    def _check_in_service(self) -> None:
        """Writes go to the collection in service, or to the one a re-embed is filling from it (a new model's
        replicas started before the switch; the archive carries their writes, and the re-embed carries the old
        model's into it). A process left behind by the switch takes none: they would miss the collection in
        service."""
        if self.galleries is None:
            return
        self._refresh()
        if not self._writable:
            raise GalleryMoved(f"gallery {self.galleries.gallery!r} is now served by another model; this process "
                               f"takes no writes until it is replaced: retry shortly")
