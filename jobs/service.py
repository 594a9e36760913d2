"""The identity service: one-shot lookup ("identity X" or "unknown") and the gallery's administration, without HTTP.

Three parts, each with one job, composed here for the CLI, the demo, the API's routes and Ray Serve's batcher:
faces from photos (jobs/photos.py), search and decide (jobs/lookup.py), and every write through the gallery's one
writer (indexer/writer.py: the fence, "not this person", archive before vector, tombstones before deletes).

Faces enrolled through the API are keyed by identity and image content (SHA-256), so enrolling the same photo
twice is one face, not two, and a retried request is harmless.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass

import numpy as np

from common.errors import Conflict, Unavailable
from embedder.archiving import same_picture
from embedder.embed import Embedder
from embedder.faces import FacePolicy, NoFace, PreparedFace, check_named, face_record  # noqa: F401  (re-exported)
from indexer.archive import FaceArchive
from indexer.calibration import GalleryCalibration
from indexer.decision import Decision
from indexer.errors import BackendUnavailable, ModelMismatch
from indexer.galleries import Galleries
from indexer.ids import (
    BELOW,
    BELOW_MODEL,
    EXPIRES_AT,
    KEPT_AT,
    KEPT_FROM,
    REJECTED_FROM,
    SHA256,
    STRANGER,
    UNLABELLED,
    face_id,
    validate_identity,
)
from indexer.store import FaceIndex, FaceRow
from indexer.writer import FaceImage, GalleryWriter
from jobs.calibration_watch import CalibrationWatch, keep_and_audit
from jobs.lookup import Lookup
from jobs.photos import PhotoFaces

PURGE_EVERY_S = 3600.0  # how often a service that keeps unknown faces deletes the expired ones
READY_CACHE_S = 1.0  # how long a readiness answer stands before the store is asked again


@dataclass(frozen=True)
class Enrolled:
    identity: str
    face_ids: list[int]
    boxes: list[tuple[float, float, float, float] | None] | None = None  # where each face is in its photo


# a face of the identity this close to a new one may be the same photo (a copy, or the file saved again; the same
# photo through the same model scores 1.0000, jobs/pipelines/sink.py): the archive's images of the two then decide
SAME_PHOTO_NEAR = 0.99


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
        self.photos = PhotoFaces(embedder, policy, max_pixels)
        self.lookup = Lookup(index, embedder.spec.embedding_size, embedder.calibration, k=k, watch=watch,
                             gallery=galleries.gallery if galleries is not None else None)
        self.writer = GalleryWriter(index, archive, galleries)
        self.embedder, self.index, self.archive, self.galleries = embedder, index, archive, galleries
        self.conflict_check = conflict_check  # a face matching another identity is refused unless `proceed`
        self.watch = self.lookup.watch  # the gallery's size, for its calibration
        self._ready_checked, self._not_ready = -READY_CACHE_S, None
        self._purged_at = -float("inf")
        self._enrolling = threading.Lock()

    @classmethod
    def open(cls, settings, *, create: bool = False, embedder: Embedder | None = None,
             client=None) -> IdentityService:
        """The service a configuration describes (jobs.settings.Settings). `create` makes the collection for this
        model when it does not exist yet (the API, which can enroll into an empty gallery). The API's other
        galleries share the default one's `embedder` (one model in memory) and Milvus `client`."""
        from embedder.embed import open_embedder
        from indexer.store import CollectionInfo, connect, is_lite_uri

        embedder = embedder or open_embedder(settings.require("model").model)
        policy = settings.face_policy()
        uri, token = settings.milvus_uri, settings.token()
        reconnect = None if is_lite_uri(uri) else (lambda: connect(uri, token, timeout=2.0))
        spec, calibration = embedder.spec, embedder.calibration
        galleries = Galleries(client or connect(uri, token), settings.gallery)
        index = galleries.open(CollectionInfo.of_calibrated(spec, calibration),
                               create=create, consistency=settings.search_consistency,
                               search_ef=settings.search_ef, reconnect=reconnect)
        if galleries.left_behind(index.collection):  # a process started with the model a re-embed replaced
            other = FaceIndex(galleries.client, galleries.serving()).info().model_version
            raise ModelMismatch(f"gallery {settings.gallery!r} is served by model {other} since a re-embed, not "
                                f"{spec.version}: this model's collection is no longer in service (what was "
                                "enrolled, moved or deleted since is not in it); use the model it serves (--model), "
                                "or `arcmatch alias rollback` to serve this one again")
        root = settings.archive_root()
        archive = FaceArchive(root, settings.gallery) if root else None
        watch = CalibrationWatch(index, every_s=settings.calibration_check_s,
                                 recalibrate=settings.recalibrate_on_growth)
        service = cls(embedder, index, policy=policy, k=settings.search_k, max_pixels=settings.max_pixels,
                      archive=archive, galleries=galleries, conflict_check=settings.enroll_conflict_check, watch=watch)
        watch.kept = keep_and_audit(service.set_gallery_calibration, settings)
        return service

    def close(self) -> None:
        self.watch.close()  # its count in the background uses this client
        self.index.client.close()

    # searching
    def identify(self, images: list[bytes], threshold: float | None = None, k: int | None = None, top_n: int = 1,
                 select: str = "all") -> list[list[FaceMatch]]:
        """For each photo, a decision per face (select "all") or for its largest face; one model call and one
        search for the whole list. A photo without a face raises NoFace naming its position in the list."""
        faces: list[list[PreparedFace]] = []
        for n, data in enumerate(images):
            try:
                faces.append(self.photos.probe_faces(self.photos.load(data), select))
            except NoFace as exc:
                raise NoFace(f"image {n + 1}: {exc}" if len(images) > 1 else str(exc)) from None
        flat = [f for per_image in faces for f in per_image]
        decisions = iter(self.lookup.search_vectors(self.photos.embed_faces(flat), threshold, k, top_n))
        return [[FaceMatch(f, next(decisions)) for f in per_image] for per_image in faces]

    def face_image(self, face: int) -> bytes:
        return self.photos.face_image(self.archive, face)

    # the gallery's calibration (kept with the collection: only a process that may write keeps one)
    def calibrate(self, target_fpir: float, *, sample: int = 5000, save: bool = True,
                  method: str = "tail") -> GalleryCalibration:
        """Choose the gallery's threshold for `target_fpir` from its stored vectors and, with `save`, keep it with
        the collection so every process searching it uses it."""
        result = self.lookup.calibrate(target_fpir, sample=sample, method=method)
        if save:
            self.set_gallery_calibration(result)
        return result

    def set_gallery_calibration(self, result: GalleryCalibration | None) -> None:
        self.writer.in_service()
        self.lookup.keep_calibration(result)

    # faces nobody has named
    def keep_unknown(self, data: bytes, faces: list[PreparedFace], vectors: np.ndarray, decisions: list[Decision],
                     retention_days: float) -> list[int]:
        """Keep the faces of a probe photo that were answered unknown and pass the quality gate, unlabelled, for
        `arcmatch cluster` (ARCMATCH_KEEP_UNKNOWN_FACES, off by default: this is personal data). Each is
        keyed by the photo's content and the face's place in it, so a photo searched twice is kept once, and
        carries `expires_at` (purge_expired deletes it then). A photo searched again keeps what a person said of
        its faces (confirmed a stranger, "not this person"), and a face named since is left as it is. Returns the
        face ids kept."""
        chosen = [n for n, (face, d) in enumerate(zip(faces, decisions, strict=True)) if not d.is_match and face.passed]
        if not chosen:
            return []
        self.writer.in_service()
        digest, now = hashlib.sha256(data).hexdigest(), time.time()
        ids = {n: face_id(f"search\x00{digest}\x00{n}") for n in chosen}
        stored = self.index.stored_records(list(ids.values()))  # bounded: a Strong read would cost a search 200 ms
        model = self.embedder.spec.version
        rows, kept = [], {}
        photo = self.photos.load(data) if self.archive is not None else None
        for n in chosen:
            face = faces[n]
            identity, before = stored.get(ids[n], (UNLABELLED, {}))
            if identity != UNLABELLED:
                continue  # named since it was kept: a person's work
            # the threshold it was answered unknown under, and the model's whose cosine it is: a kept face is a
            # stranger whose best score is cut off there (or an enrolled person missed), which a calibration that
            # reads them must know (indexer/strangers.py); searched before under this model, the higher of the two
            below = round(decisions[n].threshold, 6)
            if before.get(BELOW_MODEL, model) == model and isinstance(before.get(BELOW), (int, float)):
                below = max(below, float(before[BELOW]))
            extra = {**{k: before[k] for k in (STRANGER, REJECTED_FROM) if k in before}, KEPT_FROM: "search",
                     SHA256: digest, KEPT_AT: int(now), EXPIRES_AT: int(now + retention_days * 86400), BELOW: below,
                     BELOW_MODEL: model}
            if self.photos.aligned:
                extra["face"] = face_record(face)
            rows.append(FaceRow(f"search:{digest[:16]}#{n}", UNLABELLED, vectors[n], ids[n], extra))
            if photo is not None:
                image, kind = self.photos.kept(photo, face)
                kept[rows[-1].face_id] = FaceImage(kind, image)
        if rows:
            self.writer.write(rows, kept)
        return [r.face_id for r in rows]

    def purge_expired(self, now: float | None = None, every_s: float = 0.0) -> int:
        """Delete the kept unknown faces whose retention has passed; with `every_s`, at most that often."""
        started = time.monotonic()
        if every_s and started - self._purged_at < every_s:
            return 0
        self._purged_at = started
        return self.writer.purge_expired(now)

    # the gallery
    def enroll(self, identity: str, images: list[tuple[str, bytes]], metadata: dict | None = None, *,
               select: str | None = None, gate: bool = True, proceed: bool = False) -> Enrolled:
        """Enroll every photo's face(s) by the policy's rule (default: exactly one face that passes the quality
        gate); `gate=False` takes faces below the gate too. All photos are checked before anything is written.
        Unless `proceed`: a face that matches another identity, or a photo whose face was rejected from this
        identity ("not this person"), is a Conflict."""
        identity = validate_identity(identity)
        check_named(select or self.photos.policy.select)
        # the fence before the photos are decoded and embedded, so a process left behind answers at once; the
        # writer checks it again when it writes, since a switch may come while the faces are embedded
        self.writer.in_service()
        prepared, kept = self.photos.enrollment(images, select=select, gate=gate, keep=self.archive is not None)
        embedded = self.photos.embed_faces([f for _, _, faces in prepared for f in faces])
        vectors, images, places = iter(embedded), iter(kept), iter(range(len(embedded)))
        rows, archived, boxes, place = {}, {}, {}, {}
        for name, data, faces in prepared:
            digest = hashlib.sha256(data).hexdigest()
            for n, face in enumerate(faces):
                key = f"{identity}\x00{digest}" + (f"\x00{n}" if len(faces) > 1 else "")
                vector, image, at = next(vectors), next(images, None), next(places)
                if face_id(key) in rows:  # the same photo twice in one request: one face, named once
                    continue
                place[face_id(key)] = at  # its row of `embedded`
                if image is not None:  # none without an archive
                    archived[face_id(key)] = FaceImage(image[1], image[0])
                extra = {**(metadata or {}), SHA256: digest}
                if self.photos.aligned:
                    # the record judges the face by the service's gate even when the caller overrode it, so a
                    # face enrolled below the gate says so (passed false, its reasons) and that it was overridden
                    judged = self.photos.judged(face)
                    extra["face"] = {**face_record(judged), **({} if gate else {"quality_override": True})}
                rows[face_id(key)] = FaceRow(f"api:{name[:200]}", identity, vector, face_id(key), extra)
                boxes[face_id(key)] = tuple(round(float(v), 1) for v in face.face.box) if self.photos.aligned else None
        # the checks and the write as one step: two requests enrolling one person under two names at once would
        # otherwise both pass the conflict check before either had written (the photos are embedded outside it)
        with self._enrolling:
            rows = self._keep_rejections(list(rows.values()), identity, proceed)  # first: the more exact reason
            searched = None  # the conflict check's decisions, read again for the same picture held already
            if self.conflict_check and not proceed:
                searched = self.lookup.check_conflicts(embedded, identity)
            order = [r.face_id for r in rows]
            self._refuse_deleted(rows, identity, proceed)
            near = ({r.face_id: [(c.face_ids[0], c.identity, c.score) for c in searched[place[r.face_id]].candidates]
                     for r in rows} if searched is not None else None)
            held = self._held_already(rows, identity, archived, proceed, near)
            rows = [r for r in rows if r.face_id not in held]
            same = self.writer.archived_as(rows, archived)  # a photo enrolled again as it was: archived already
            self.writer.write(rows, {face: image for face, image in archived.items()
                                     if face not in same and face not in held} or None)
        self.watch.poke(self.lookup.gallery_calibration)  # the gallery grew: is its calibration still right?
        return Enrolled(identity, [held.get(face, face) for face in order], [boxes[face] for face in order])

    def _refuse_deleted(self, rows: list[FaceRow], identity: str, proceed: bool) -> None:
        """Conflict, unless `proceed`, for a photo whose face was deleted from the gallery (it has a tombstone and
        the store no longer holds it): a QA pass ran `arcmatch enroll FOLDER --api` again after deleting a person
        through the API, and the person was back. Ingestion skips such photos the same way."""
        if self.archive is None or proceed or not rows:
            return
        gone = self.archive.tombstoned([r.face_id for r in rows])
        if gone:  # one read of the store for all of them: those it holds were enrolled again since
            held = self.index.vectors(sorted(gone))
            gone = {face: when for face, when in gone.items() if face not in held}
        row = next((r for r in rows if r.face_id in gone), None)
        if row is not None:
            day = time.strftime("%Y-%m-%d", time.gmtime(gone[row.face_id] / 1e9))
            raise Conflict(f"{row.source.removeprefix('api:')}: this photo's face was deleted from {identity!r} (on "
                           f"{day}): say proceed (`--proceed`, proceed=true) to enroll it again")

    def _held_already(self, rows: list[FaceRow], identity: str, images: dict[int, FaceImage], proceed: bool,
                      near: dict[int, list[tuple[int, str, float]]] | None = None) -> dict[int, int]:
        """{new face id: the face of `identity` that is the same picture} for the rows the identity holds already
        under another id: the photo ingested from a folder (keyed by its path) and now enrolled (keyed by its
        bytes), or a copy of it under another file name. A QA pass enrolled a folder it had ingested: every face
        twice. Such a photo is answered with the face it already is, as the same bytes enrolled again are. The
        same picture held by another identity is a Conflict unless `proceed` (one photo under two names), whether
        or not the gallery has a threshold to judge matches by. A face near in score (SAME_PHOTO_NEAR) is the same
        picture only if the archive's images of the two agree pixel for pixel, near enough
        (embedder.archiving.same_picture); without an archive nothing is judged so. `near`: each row's nearest
        faces (face id, identity, score) as a search found them already (the conflict check's), else searched."""
        if not rows or self.archive is None:
            return {}
        if near is None:
            hits = self.index.search(np.stack([r.vector for r in rows]), k=4)
            near = {r.face_id: [(h.face_id, h.identity, h.score) for h in found]
                    for r, found in zip(rows, hits, strict=True)}
        held = {}
        for row in rows:
            mine = images.get(row.face_id)
            for face, whose, score in near[row.face_id]:
                if face == row.face_id or score < SAME_PHOTO_NEAR or (whose != identity and proceed):
                    continue
                theirs = self.archive.image(face)
                if mine is None or theirs is None or theirs[0] != mine.kind or not same_picture(theirs[1], mine.image):
                    continue
                if whose != identity:
                    raise Conflict(f"{row.source.removeprefix('api:')}: this photo is face {face} of {whose!r} "
                                   f"already: say proceed (`--proceed`, proceed=true) to file it under {identity!r} "
                                   "too")
                held[row.face_id] = face
                break
        return held

    def _keep_rejections(self, rows: list[FaceRow], identity: str, proceed: bool) -> list[FaceRow]:
        """A photo's face id derives from the identity and the photo, so enrolling a photo again reaches the face
        stored for it. If a person said that face is not `identity`, it is a Conflict unless `proceed`, whatever
        the face is named since (as promotion and ingestion do); the face's other rejections stay with it, and
        the metadata it was stored with where this request does not set a key again."""
        checked = self.writer.check_rejections(rows, keep=True)
        refused = next((row for row, rejected in checked if rejected), None)
        if refused is not None and not proceed:
            raise Conflict(f"{refused.source.removeprefix('api:')}: this face was rejected from {identity!r} "
                           "(not this person); say proceed (`--proceed`, proceed=true) to enroll it anyway")
        return [row for row, _ in checked]

    def identity(self, identity: str) -> list[dict]:
        return self.index.faces_of(identity)

    def delete_identity(self, identity: str) -> int:
        return self.writer.delete_identity(identity)

    def delete_face(self, identity: str, face: int) -> bool:
        return self.writer.delete_face(identity, face)

    def list_identities(self, cursor: str | None, limit: int) -> tuple[list[tuple[str, int]], str | None]:
        page = self.index.list_identities(cursor, limit + 1)
        more = len(page) > limit
        page = page[:limit]
        return page, (page[-1][0] if more and page else None)

    def ready(self, max_age_s: float = READY_CACHE_S) -> dict:
        """What the service serves, once the store answers with the collection loaded; BackendUnavailable
        otherwise. The store is asked when the last answer is older than `max_age_s`, so a busy probe costs
        nothing extra. `in_service` is false when the gallery's alias has moved to another model's collection:
        this process still answers searches from its own, and refuses writes until it is replaced by one of the
        new model."""
        now = time.monotonic()
        if now - self._ready_checked >= max_age_s:
            try:
                self.index.check_ready()
                self.writer.refresh(max_age_s=0.0)
                self._not_ready = None
            except Unavailable as exc:
                self._not_ready = str(exc)
            self._ready_checked = now
        if self._not_ready is not None:
            raise BackendUnavailable(self._not_ready)
        info = self.index.info()
        out = {"collection": self.index.collection, "model_version": info.model_version, "dim": info.dim}
        if self.galleries is not None:
            out.update(gallery=self.galleries.gallery, in_service=self.writer.serving == self.index.collection,
                       gallery_serves=self.writer.serving)
        self.watch.poke(self.lookup.gallery_calibration)
        return {**out, "calibration": self.watch.status(self.lookup.gallery_calibration())}
