"""Prometheus's scrape target: open like the probes, as it carries counts and timings, never a name or a face id
(jobs/api/metrics.py says what is exported)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from jobs.api.deps import ServiceDep
from jobs.api.metrics import exposition, observe_ready

router = APIRouter(tags=["metrics"])


@router.get("/metrics", include_in_schema=False)
def metrics(service: ServiceDep, request: Request) -> Response:
    observe_ready(service, request.app.state.settings.gallery)
    return Response(exposition(), media_type=CONTENT_TYPE_LATEST)
