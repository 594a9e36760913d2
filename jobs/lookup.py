"""Search and decide: the one path from vectors to "identity X" or "unknown", for every caller.

The CLI's `search`, the demo, the API's routes, Ray Serve's batcher and the enrollment conflict check all end in
`search_checked`, so a threshold, a k or an FPIR means the same everywhere. The threshold defaults to the gallery's
own calibration (`arcmatch calibrate`), else the one calibrated with the model (stored in its checkpoint, copied
into the collection), so a lookup needs no number typed in.
"""

from __future__ import annotations

import time

import numpy as np

from common.errors import Conflict
from embedder.errors import ModelError
from embedder.layout import Calibration
from indexer import calibration
from indexer.calibration import GalleryCalibration
from indexer.decision import Decision, decide
from indexer.errors import BackendUnavailable, InvalidValue
from indexer.ids import FLOAT32_MAX, validate_threshold
from indexer.store import FaceIndex, Hit
from jobs.calibration_watch import CalibrationWatch

CALIBRATION_CACHE_S = 10.0  # how long the gallery's calibration stands before it is read again

Query = tuple[float | None, int | None, int]  # (threshold, k, top_n): None takes the lookup's own


GIVE_ONE = "give a threshold (--threshold; a request's threshold field)"  # the CLI's words and the API's


class Lookup:
    """Searches one collection (`index`) with the vectors of a model of `dim` values whose own calibration is
    `model` (None: uncalibrated); `watch` follows the gallery's size for its calibration. `gallery`, the name
    behind the collection, is what its messages tell a person to calibrate."""

    def __init__(self, index: FaceIndex, dim: int, model: Calibration | None, *, k: int = 20,
                 watch: CalibrationWatch | None = None, gallery: str | None = None) -> None:
        self.index, self.dim, self.model, self.k = index, dim, model, k
        self.gallery = gallery
        self.watch = watch or CalibrationWatch(index, recalibrate=False)
        self._calibration, self._calibration_read = None, -CALIBRATION_CACHE_S

    def check_vectors(self, vectors) -> np.ndarray:
        """Caller-given embeddings as unit float32 rows of the model's dimension, or InvalidValue."""
        dim = self.dim
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

    # the threshold
    def threshold(self, threshold: float | None = None, fpir: float | None = None) -> float:
        """The caller's threshold, or the one for the caller's FPIR at the gallery's size (read from the gallery
        calibration's curve), else the gallery's own calibration, else the model's calibrated one, else the one
        stored with the collection."""
        if threshold is not None and fpir is not None:
            raise InvalidValue("give a threshold or an FPIR, not both")
        if threshold is not None:
            return validate_threshold(threshold)
        if fpir is not None:
            found = self.gallery_calibration()
            if found is None:
                raise InvalidValue(f"an FPIR needs the gallery's calibration ({self._calibrate()}), which this "
                                   "gallery has not got: give a threshold")
            return found.threshold_for_fpir(fpir, self.watch.size(found))
        return self.threshold_in_use()[0]

    def _threshold_found(self) -> tuple[float | None, str]:
        gallery = self.gallery_calibration()
        return ((gallery.threshold, "gallery") if gallery is not None else
                (self.model.threshold, "model") if self.model is not None else
                (self.index.info().threshold, "collection"))

    def has_threshold(self) -> bool:
        """Whether any threshold is set (valid or not): a gallery being built for a model nobody calibrated has
        none until `arcmatch calibrate` reads its faces."""
        return self._threshold_found()[0] is not None

    def threshold_source(self, threshold: float | None = None, fpir: float | None = None) -> str:
        """Where the threshold a search with these arguments is answered at comes from, for its answer: "given",
        "fpir", or threshold_in_use's word ("gallery", "model", "collection")."""
        if threshold is not None:
            return "given"
        return "fpir" if fpir is not None else self.threshold_in_use()[1]

    def threshold_in_use(self) -> tuple[float, str]:
        """(threshold, where it comes from: "gallery", "model" or "collection")."""
        found = self._threshold_found()
        if found[0] is not None:
            try:
                return validate_threshold(found[0]), found[1]
            except InvalidValue:  # kept before thresholds were checked, or a file edited by hand: every search
                # would be "unknown" (or everyone someone) without a word
                raise ModelError(f"the {found[1]}'s threshold {found[0]} is not a cosine between -1 and 1: run "
                                 f"{self._calibrate()} (the gallery's own wins), or {GIVE_ONE}") from None
        raise ModelError(f"the model has no calibrated threshold: run `arcmatch eval --calibrate` or "
                         f"{self._calibrate()}, or {GIVE_ONE}")

    def _calibrate(self) -> str:
        """How this gallery is calibrated, in the CLI's words and the API's."""
        if self.gallery is None:
            return "`arcmatch calibrate` (POST /v1/calibration)"
        return f"`arcmatch calibrate --gallery {self.gallery}` (POST /v1/galleries/{self.gallery}/calibration)"

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

    def calibrate(self, target_fpir: float, *, sample: int = 5000, method: str = "tail") -> GalleryCalibration:
        """The gallery's threshold for `target_fpir` from its stored vectors (indexer/calibration.py), not kept."""
        model = self.model.threshold if self.model is not None else self.index.info().threshold
        return calibration.calibrate(self.index, target_fpir, model_threshold=model, sample=sample, method=method)

    def keep_calibration(self, result: GalleryCalibration | None) -> None:
        """Keep (None: clear) the gallery's calibration with the collection, for every process searching it."""
        calibration.store(self.index, result)
        self._calibration, self._calibration_read = result, time.monotonic()

    # searching
    def decide(self, hits: list[Hit], threshold: float | None = None, k: int | None = None,
               top_n: int = 1) -> Decision:
        """The decision for one probe from its hits (searched with at least k): the best identity, or unknown."""
        return decide(hits[: k or self.k], self.threshold(threshold), top_n)

    def search_vectors(self, vectors, threshold: float | None = None, k: int | None = None,
                       top_n: int = 1) -> list[Decision]:
        return self.search_checked(self.check_vectors(vectors), [(threshold, k, top_n)] * len(vectors))

    def search_checked(self, vectors: np.ndarray, queries: list[Query]) -> list[Decision]:
        """The one search-and-decide every caller ends in (a request's faces, Ray Serve's batch of requests):
        vectors already checked (check_vectors), one search with the largest k asked, then each decided with its
        own (threshold, k, top_n), so a batch never changes an answer."""
        hits = self.index.search(vectors, k=max(k or self.k for _, k, _ in queries))
        return [self.decide(h, threshold, k, top_n) for h, (threshold, k, top_n) in zip(hits, queries, strict=True)]

    def check_conflicts(self, vectors: np.ndarray, identity: str) -> list[Decision] | None:
        """Conflict (409) when any of these faces matches another named identity above the threshold: enrolling
        it as `identity` would make two people one, or a typo a second person. With no threshold at all there is
        no match to judge by: the gallery of an uncalibrated model is enrolled first, then calibrated from its
        own faces (`arcmatch gallery check` finds one person under two names without a threshold). Returns the
        decisions its search made (None where it made none), for the enrollment's own look at them."""
        decisions = self.search_vectors(vectors) if self.has_threshold() else None
        matches = _answered_as_others(decisions or [], identity)
        if matches:
            decision = matches[0][1]
            raise Conflict(f"a face matches {decision.identity!r} (score {decision.score:.3f}, threshold "
                           f"{decision.threshold:.3f}): say proceed (`--proceed`, proceed=true) to enroll it as "
                           f"{identity!r} anyway")
        return decisions

    def _others(self, vectors: np.ndarray, identity: str) -> list[tuple[int, Decision]]:
        """(row, decision) of each vector answered as another identity than `identity`; none without any
        threshold."""
        if not self.has_threshold():
            return []
        return _answered_as_others(self.search_vectors(vectors), identity)

    def check_faces(self, vectors: np.ndarray, faces: list[int], identity: str) -> None:
        """check_conflicts for stored faces about to be named `identity` (a cluster, the faces a calibration set
        aside): the Conflict names every face that matches someone else, so that a person can leave those out
        (`face_ids`) and name the rest, where one face's match alone said nothing of the others."""
        matches = [(faces[n], d) for n, d in self._others(vectors, identity)]
        if matches:
            listed = "; ".join(f"face {face}: {d.identity!r} at {d.score:.3f}" for face, d in matches[:10])
            raise Conflict(f"{len(matches)} of these {len(faces)} faces match someone else at the threshold "
                           f"{matches[0][1].threshold:.3f} ({listed}{' ...' if len(matches) > 10 else ''}): leave "
                           f"them out (face_ids), or say proceed (`--proceed`, proceed=true) to name them "
                           f"{identity!r} anyway")


def _answered_as_others(decisions: list[Decision], identity: str) -> list[tuple[int, Decision]]:
    """(row, decision) of each decision that answers another identity than `identity`."""
    return [(n, d) for n, d in enumerate(decisions) if d.is_match and d.identity != identity]
