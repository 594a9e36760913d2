"""Liveness (open, for probes) and readiness (needs a key: it names the collection and the model)."""

from __future__ import annotations

from fastapi import APIRouter

from jobs.api.deps import ReadKey, ServiceDep
from jobs.api.errors import responses
from jobs.api.schemas import Health, Ready

router = APIRouter(prefix="/v1", tags=["health"])


@router.get("/health")
def health() -> Health:
    return Health(status="ok")


@router.get("/ready", responses=responses(401, 403, 404, 503))
def ready(_: ReadKey, service: ServiceDep) -> Ready:
    return Ready(status="ready", **service.ready())
