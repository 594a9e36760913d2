"""Prometheus's scrape target: open like the probes, as it carries counts and timings, never a name or a face id
(jobs/api/metrics.py says what is exported)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from common.errors import Unavailable
from jobs.api.deps import ServiceDep
from jobs.api.metrics import READY, exposition

router = APIRouter(tags=["metrics"])


@router.get("/metrics", include_in_schema=False)
def metrics(service: ServiceDep, request: Request) -> Response:
    gallery = request.app.state.settings.gallery
    try:
        service.ready()  # asked at most every few seconds (READY_CACHE_S): a scrape costs nothing extra
        READY.labels(gallery).set(1)
    except Unavailable:
        READY.labels(gallery).set(0)
    return Response(exposition(), media_type=CONTENT_TYPE_LATEST)
