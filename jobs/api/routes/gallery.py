"""What is wrong with the gallery's labels (indexer/health.py): the API's side of `arcmatch gallery check`."""

from __future__ import annotations

import asyncio
from dataclasses import asdict

from fastapi import APIRouter

from jobs.api.deps import ReadKey, ServiceDep
from jobs.api.errors import responses
from jobs.api.schemas import HealthReport

router = APIRouter(prefix="/v1/gallery", tags=["gallery"], responses=responses(401, 403, 503))


@router.get("/check")
async def check(_: ReadKey, service: ServiceDep) -> HealthReport:
    """Pairs of names that look like one person, photos more like another identity than their own, identities
    with no face past the quality gate. Reads every labelled face: seconds on a large gallery."""
    from indexer.health import check_index

    found = asdict(await asyncio.to_thread(check_index, service.index))
    found["misfits"] = [{**m, "face_id": str(m["face_id"])} for m in found["misfits"]]
    return HealthReport(**found)
