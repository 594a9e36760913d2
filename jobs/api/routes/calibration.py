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


def _out(found, index) -> GalleryCalibrationOut | None:
    """The calibration as the API gives it: the faces it set aside as they are now (indexer.strangers.now), face
    ids as strings (int64 is beyond JSON's safe integers)."""
    if found is None:
        return None
    from indexer.strangers import now

    fields = asdict(found)
    for listed in ("strangers_set_aside", "kept_nearest"):
        fields[listed] = [{**f, "face_id": str(f["face_id"])} if f.get("face_id") is not None else f
                          for f in now(index, fields[listed])]
    return GalleryCalibrationOut(**fields)


@router.get("")
def current(_: ReadKey, service: ServiceDep) -> CalibrationOut:
    """The threshold in use and where it comes from: null for a gallery of a model nobody calibrated (what it
    needs is a calibration, not a different request). A stored threshold that is no cosine is still an error."""
    threshold, source = service.lookup.threshold_in_use() if service.lookup.has_threshold() else (None, None)
    found = service.lookup.gallery_calibration()
    if found is not None and service.watch.identities is None:
        # never counted in this process (just started): the size at calibration would be read as the size now,
        # and a gallery grown since as meeting its target
        service.watch.count_now()
    service.watch.poke(service.lookup.gallery_calibration)
    return CalibrationOut(threshold=threshold, source=source, gallery=_out(found, service.index),
                          status=service.watch.status(found))


@router.post("", responses=responses(400, 422))
def calibrate(_: WriteKey, service: ServiceDep, request: Request, body: CalibrateIn) -> GalleryCalibrationOut:
    """Choose the threshold that answers `fpir` of unknown people as someone, from the gallery's stored faces,
    and (unless `dry_run`) keep it with the collection: every replica uses it within seconds."""
    from indexer.calibration import target_fpir

    fpir = body.fpir if body.fpir is not None else target_fpir(service.index)
    result = service.calibrate(fpir, sample=body.sample, save=not body.dry_run, method=body.method)
    note(request, threshold=result.threshold, target_fpir=fpir, kept=not body.dry_run)
    return _out(result, service.index)


@router.delete("", name="calibration_clear")
def clear(_: WriteKey, service: ServiceDep, request: Request) -> CalibrationOut:
    """Forget the gallery's calibration: the model's threshold applies again."""
    service.set_gallery_calibration(None)
    note(request)
    return current(_, service)
