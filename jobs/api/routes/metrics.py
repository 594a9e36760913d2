"""Prometheus's scrape target: open like the probes, as it carries counts and timings, never an identity or a face
id (jobs/api/metrics.py says what is exported), until a key with the metrics scope is configured; then only such a
key reads it (jobs/api/keys.py)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from jobs.api.deps import ServiceDep
from jobs.api.keys import bearer, scrape_refusal
from jobs.api.metrics import exposition, observe_ready

router = APIRouter(tags=["metrics"])


@router.get("/metrics", include_in_schema=False)
def metrics(service: ServiceDep, request: Request, x_api_key: Annotated[str | None, Header()] = None,
            authorization: Annotated[str | None, Header()] = None) -> Response:
    refusal = scrape_refusal(request.app.state.keys, x_api_key or bearer(authorization))
    if refusal is not None:
        raise refusal
    observe_ready(service, request.app.state.settings.gallery)
    return Response(exposition(), media_type=CONTENT_TYPE_LATEST)
