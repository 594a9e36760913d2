"""The gallery's threshold: which one searches use, and choosing one on the gallery's own faces (the API's side of
`arcmatch calibrate`; indexer/calibration.py says how)."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter, Request

from jobs.api.auditing import note
from jobs.api.deps import ReadKey, ServiceDep, WriteKey
from jobs.api.errors import responses
from jobs.api.schemas import CalibrateIn, CalibrationOut, GalleryCalibrationOut

router = APIRouter(prefix="/calibration", tags=["calibration"], responses=responses(401, 403, 503))


def _out(found) -> GalleryCalibrationOut | None:
    return GalleryCalibrationOut(**asdict(found)) if found is not None else None


@router.get("")
def current(_: ReadKey, service: ServiceDep) -> CalibrationOut:
    threshold, source = service.lookup.threshold_in_use()
    found = service.lookup.gallery_calibration()
    service.watch.poke(service.lookup.gallery_calibration)
    return CalibrationOut(threshold=threshold, source=source, gallery=_out(found), status=service.watch.status(found))


@router.post("", responses=responses(400, 422))
def calibrate(_: WriteKey, service: ServiceDep, request: Request, body: CalibrateIn) -> GalleryCalibrationOut:
    """Choose the threshold that answers `fpir` of unknown people as someone, from the gallery's stored faces,
    and (unless `dry_run`) keep it with the collection: every replica uses it within seconds."""
    from indexer.calibration import target_fpir

    fpir = body.fpir if body.fpir is not None else target_fpir(service.index)
    result = service.calibrate(fpir, sample=body.sample, save=not body.dry_run, method=body.method)
    note(request, "calibrate", threshold=result.threshold, target_fpir=fpir, kept=not body.dry_run)
    return _out(result)


@router.delete("")
def clear(_: WriteKey, service: ServiceDep, request: Request) -> CalibrationOut:
    """Forget the gallery's calibration: the model's threshold applies again."""
    service.set_gallery_calibration(None)
    note(request, "calibration_clear")
    return current(_, service)
