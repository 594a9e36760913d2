"""What is wrong with the gallery's labels (indexer/health.py): the API's side of `arcmatch gallery check`."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request

from jobs.api.auditing import note
from jobs.api.deps import CuratorDep, ReadKey, ServiceDep, WriteKey
from jobs.api.errors import responses
from jobs.api.schemas import DistinctIn, DistinctOut, HealthReport, StrangersIn, StrangersOut

router = APIRouter(prefix="/gallery", tags=["gallery"], responses=responses(401, 403, 503))


@router.get("/check")
async def check(_: ReadKey, service: ServiceDep) -> HealthReport:
    """Pairs of names that look like one person, photos more like another identity than their own, photos like
    no one else of their identity, names whose photos look like two people, identities with no face past the
    quality gate. Reads every labelled face:
    seconds on a large gallery."""
    from indexer.health import check_index

    found = (await asyncio.to_thread(check_index, service.index)).as_json()
    return HealthReport(**found)


def _sorted(pairs) -> DistinctOut:
    return DistinctOut(pairs=sorted(sorted(p) for p in pairs))


@router.get("/distinct")
def distinct_pairs(_: ReadKey, service: ServiceDep) -> DistinctOut:
    """The pairs of identities a person confirmed are different people."""
    from indexer import distinct

    return _sorted(distinct.pairs(service.index))


@router.post("/distinct", name="distinct", responses=responses(400, 404, 422))
def different_people(_: WriteKey, curator: CuratorDep, request: Request, body: DistinctIn) -> DistinctOut:
    """"Different people": the two are no longer listed as one person under two names, and their scores count as
    a confirmed non-match in the next calibration."""
    found = curator.different_people(*body.identities)
    note(request, body.identities[0], other=body.identities[1])
    return _sorted(found)


@router.post("/strangers", responses=responses(400, 404, 409, 422))
async def confirm_strangers(_: WriteKey, service: ServiceDep, request: Request, body: StrangersIn) -> StrangersOut:
    """These unlabelled faces (by source) are nobody who will be enrolled: the next calibration counts them as
    strangers as they are, never left out as looking like someone enrolled (`arcmatch gallery stranger`). A source
    that is no unlabelled face is a 404, and nothing is marked."""
    from indexer.strangers import confirm

    threshold = service.lookup.threshold_in_use()[0] if service.lookup.has_threshold() else None
    marked = [str(f) for f in await asyncio.to_thread(confirm, service.writer, body.sources, threshold, body.proceed)]
    note(request, face_ids=marked)
    return StrangersOut(face_ids=marked)


@router.post("/strangers/kept", name="confirm_strangers", responses=responses(400, 404))
async def confirm_kept_strangers(_: WriteKey, service: ServiceDep, request: Request) -> StrangersOut:
    """Every face kept from searches (ARCMATCH_KEEP_UNKNOWN_FACES) that is still unnamed is nobody who will be
    enrolled: say it once the enrolled people among them are named (`arcmatch gallery stranger --kept`). The next
    calibration, where fewer than 100 unlabelled faces were ingested, reads them as strangers answered unknown
    below the threshold of their day."""
    from indexer.strangers import confirm_kept

    found, _ = await asyncio.to_thread(confirm_kept, service.writer)
    marked = [str(f) for f in found]
    note(request, face_ids=marked, kept=True)
    return StrangersOut(face_ids=marked)
