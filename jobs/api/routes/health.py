"""Liveness and readiness, both open: they are what an orchestrator's probes call.

Liveness says the process answers; readiness says it can serve (the store answers and holds the collection
loaded) and answers 503 while it cannot, so a load balancer stops sending traffic during an outage and resumes
by itself once the store is back. Without a key readiness says only that: what it serves (collection, model,
gallery) is for a key with the read scope that reaches the default gallery (the others answer at
/v1/galleries/{gallery}/ready), as a probe needs none of it and a stranger should learn none of it.
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from jobs.api.deps import OptionalKey, ServiceDep
from jobs.api.errors import responses
from jobs.api.schemas import Health, Ready

router = APIRouter(prefix="/v1", tags=["health"])


@router.get("/health")
async def health() -> Health:  # on the event loop itself: it answers even when every worker thread is busy
    return Health(status="ok")


@router.get("/ready", responses=responses(404, 503), response_model_exclude_unset=True)
def ready(service: ServiceDep, key: OptionalKey, request: Request) -> Ready:
    details = service.ready()  # BackendUnavailable (503) while the store cannot serve, key or not
    told = key is not None and "read" in key.scopes and key.reaches(request.app.state.settings.gallery)
    return Ready(status="ready", **details) if told else Ready(status="ready")

