"""Prometheus's scrape target: open like the probes, as it carries counts and timings, never an identity or a face
id (jobs/api/metrics.py says what is exported), until a key with the metrics scope is configured; then only such a
key reads it (jobs/api/keys.py)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from common.errors import Unavailable
from jobs.api.keys import bearer, scrape_refusal
from jobs.api.metrics import READY, exposition, observe_ready

router = APIRouter(tags=["metrics"])


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request, x_api_key: Annotated[str | None, Header()] = None,
            authorization: Annotated[str | None, Header()] = None) -> Response:
    refusal = scrape_refusal(request.app.state.keys, x_api_key or bearer(authorization))
    if refusal is not None:
        raise refusal
    gallery = request.app.state.settings.gallery
    try:
        service = request.app.state.galleries.default()[0]
    except Unavailable:  # not opened yet, its store out of reach: not ready, and said (the alert reads a 0)
        READY.labels(gallery).set(0)
    else:
        observe_ready(service, gallery)
    return Response(exposition(), media_type=CONTENT_TYPE_LATEST)
