"""Whether the gallery's calibration still keeps its promise at the gallery's size now, and calibrating again when
it does not (ARCMATCH_RECALIBRATE_ON_GROWTH, on by default).

Why: a threshold chosen for FPIR 1% at 150 people lets about 10% of strangers through at 1,500: each identity is
one more chance for a stranger to match (indexer.rates.at_size). A gallery grows a few people at a time, so nobody
notices the moment its threshold stops meaning what it was chosen for. The size at calibration is stored with it;
this compares it with the size now and, when the estimated FPIR has passed its target by STALE_FACTOR, calibrates
again with the same target and method.

Counting identities is a scan of the labelled faces (Milvus has no DISTINCT), so it runs at most every `every_s`
seconds and off the request path: `status` answers from the last count, `poke` starts a count when one is due.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from common.errors import ArcmatchError
from indexer import calibration
from indexer.calibration import TAIL_METHOD, GalleryCalibration

log = logging.getLogger("arcmatch.calibration")


def count_identities(index) -> int:
    return len({identity for _, identity in index.labelled_faces()})


def method_of(found: GalleryCalibration) -> str:
    return "tail" if found.method == TAIL_METHOD else "top1"


def recalibrated(index, found: GalleryCalibration, identities: int) -> GalleryCalibration | None:
    """A new calibration with `found`'s target and method when `found` no longer meets its target at
    `identities`, else None (nothing to do). Raises what calibrate raises (a gallery too small, an outage)."""
    if found.status(identities)["meets_target"]:
        return None
    return calibration.calibrate(index, found.target_fpir, model_threshold=found.model_threshold,
                                 method=method_of(found))


class CalibrationWatch:
    """The last count of the gallery's identities, taken in the background; re-calibrates on growth when asked."""

    def __init__(self, index, *, every_s: float = 300.0, recalibrate: bool = True,
                 kept: Callable[[GalleryCalibration], None] | None = None) -> None:
        self.index, self.every_s, self.recalibrate = index, every_s, recalibrate
        self.kept = kept  # called with a new calibration to keep (the service stores and audits it)
        self.identities: int | None = None
        self._counted_at, self._count_began = -float("inf"), -float("inf")  # monotonic, wall clock
        self._busy = threading.Lock()
        self._closed = False

    def close(self, timeout_s: float = 30.0) -> None:
        """No count from now on, and a running one waited for (up to `timeout_s`): its calls use the client that
        the caller is about to close, and would otherwise fail against a closed channel, retried and logged."""
        self._closed = True
        if self._busy.acquire(timeout=timeout_s):
            self._busy.release()

    def size(self, found: GalleryCalibration) -> int:
        """The gallery's identities by the newer of the last count and `found` (which counted them too)."""
        if self.identities is None or self._count_began < found.created_at:
            return found.identities
        return self.identities

    def status(self, found: GalleryCalibration | None) -> dict | None:
        """The stored calibration's status at the gallery's size now (None without a calibration)."""
        return None if found is None else found.status(self.size(found))

    def count_now(self) -> int:
        """Count the gallery's identities now, in this thread, and never re-calibrate: what a read (a search that
        asks for a rate at the size now) may do. Returns the count."""
        with self._busy:
            began = time.time()
            self.identities, self._count_began = count_identities(self.index), began
            self._counted_at = time.monotonic()
        return self.identities

    def poke(self, current: Callable[[], GalleryCalibration | None], *, wait: bool = False) -> None:
        """Count again (and re-calibrate if due): in a thread when the last count is older than every_s and none
        is running; with `wait`, now, in this thread, whatever the last count (after a running one finishes).
        `current` reads the calibration in use when the count is done."""
        if self._closed:
            return
        if wait:
            self._busy.acquire()
        elif time.monotonic() - self._counted_at < self.every_s or not self._busy.acquire(blocking=False):
            return
        self._counted_at = time.monotonic()
        if wait:
            self._run(current)
        else:
            threading.Thread(target=self._run, args=(current,), name="calibration-watch", daemon=True).start()

    def _run(self, current: Callable[[], GalleryCalibration | None]) -> None:
        try:
            began = time.time()
            self.identities, self._count_began = count_identities(self.index), began
            found = current()
            if self.recalibrate and found is not None and self.kept is not None:
                fresh = recalibrated(self.index, found, self.identities)
                if fresh is not None:
                    self.kept(fresh)
                    log.warning("the gallery grew from %d to %d identities: calibrated again for FPIR %s, "
                                "threshold %.4f -> %.4f", found.identities, fresh.identities, found.target_fpir,
                                found.threshold, fresh.threshold)
                    if fresh.suspects:
                        log.warning("%s", fresh.set_aside_line())
        except ArcmatchError as exc:  # an outage, or a gallery calibrate refuses: the next poke tries again
            log.warning("calibration watch: %s", exc)
            self._counted_at = -float("inf") if self.identities is None else self._counted_at
        except Exception:  # a background thread: said in the log, never lost, never fatal to the service
            log.exception("calibration watch failed")
        finally:
            self._busy.release()


def keep_and_audit(keep: Callable[[GalleryCalibration], None], settings) -> Callable[[GalleryCalibration], None]:
    """`keep`, then one audit record (jobs/audit.py) saying the growth re-calibrated the gallery."""
    from jobs.audit import AuditLog

    def kept(fresh: GalleryCalibration) -> None:
        keep(fresh)
        trail = AuditLog(settings.audit_root(), retention_days=settings.audit_retention_days)
        try:
            trail.append({"key": "arcmatch:growth", "method": "internal", "path": "calibration watch",
                          "action": "calibrate", "status": 200, "threshold": fresh.threshold,
                          "target_fpir": fresh.target_fpir, "identities": fresh.identities})
        finally:
            trail.close()

    return kept
