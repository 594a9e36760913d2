"""What the API exports for Prometheus at /metrics: requests, latency by phase, the live decisions, readiness.

Why prometheus-client and not OpenTelemetry: it is already installed with Ray Serve (whose own metrics are
Prometheus too), it renders the text format with no collector in between, and a scrape is a plain GET an
orchestrator already knows. The metrics live in one registry per process, shared by every app built in it.

What is exported, and what is not: route templates (`/v1/identities/{identity}`), never paths, so no identity name
or face id ever reaches a label; the gallery's name (the configured alias) is the only label from settings. The
decisions and the best score of each searched face are the live view of the threshold: the share answered
"unknown" and the median best score move when a camera, the lighting or the gallery changes, before anyone
complains (alert rules: k8s/base/prometheus-rules.yaml).

Several processes behind one address (`arcmatch serve --workers N`, the Ray Serve replicas of one node) would each
answer a scrape with their own counters, and Prometheus would read every switch between them as a counter reset.
So when PROMETHEUS_MULTIPROC_DIR is set, prometheus-client keeps every value in a file per process there, and a
scrape answered by any of them sums them all (dead processes' counts included, so counters never go back). Both
set it themselves: `serve --workers` to a fresh directory per run, a Serve deployment to one per application and
node (jobs/api/serve.py, which also serves the node's sum on ARCMATCH_METRICS_PORT, out of the proxy's hands).
"""

from __future__ import annotations

import os
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from common.errors import Unavailable
from indexer.milvus import OBSERVERS
from jobs.api.asgi import HttpMiddleware, at_start
from jobs.api.timing import current_phases

SHARED_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"  # prometheus-client's own name: it reads it when first imported
SHARED_DIR = os.environ.get(SHARED_DIR_VARIABLE) or None
if SHARED_DIR:
    os.makedirs(SHARED_DIR, exist_ok=True)  # before the first metric below: a value's file is made with it

REGISTRY = CollectorRegistry(auto_describe=True)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
SCORE_BUCKETS = tuple(round(0.05 * i, 2) for i in range(-4, 21))  # cosine similarities, -0.2 to 1.0

REQUESTS = Counter("arcmatch_http_requests", "Requests answered, by route template, method and status",
                   ["route", "method", "status"], registry=REGISTRY)
LATENCY = Histogram("arcmatch_http_request_duration_seconds", "Time inside the app per request, by route template",
                    ["route", "method"], buckets=LATENCY_BUCKETS, registry=REGISTRY)
PHASES = Histogram("arcmatch_phase_duration_seconds", "Time per phase of a request (decode, detect, embed, search)",
                   ["phase"], buckets=LATENCY_BUCKETS, registry=REGISTRY)
DECISIONS = Counter("arcmatch_decisions", "Faces searched, by gallery and decision (identified, unknown, no_face)",
                    ["gallery", "decision"], registry=REGISTRY)
BEST_SCORE = Histogram("arcmatch_best_score", "Best gallery score of each searched face", ["gallery"],
                       buckets=SCORE_BUCKETS, registry=REGISTRY)
READY = Gauge("arcmatch_ready", "1 while the store answers and the collection is loaded, else 0", ["gallery"],
              registry=REGISTRY, multiprocess_mode="mostrecent")  # shared: the latest check of any process
MILVUS_CALLS = Counter("arcmatch_milvus_calls", "Calls into Milvus (each try), by call and outcome (ok, or what "
                       "failed: unreachable, no answer in time, not loaded, ...)", ["call", "outcome"],
                       registry=REGISTRY)
MILVUS_LATENCY = Histogram("arcmatch_milvus_call_duration_seconds", "Time of each call into Milvus", ["call"],
                           buckets=LATENCY_BUCKETS, registry=REGISTRY)
AUDIT_FAILURES = Counter("arcmatch_audit_write_failures", "Audit records that could not be written",
                         registry=REGISTRY)


def milvus_call(what: str, seconds: float, outcome: str) -> None:
    MILVUS_CALLS.labels(what, outcome).inc()
    MILVUS_LATENCY.labels(what).observe(seconds)


def observe_milvus() -> None:
    """Count every Milvus call from now on (once per process, however many apps it builds)."""
    if milvus_call not in OBSERVERS:
        OBSERVERS.append(milvus_call)


def decided(gallery: str, decisions) -> None:
    """Count the decisions of one search and observe each face's best score."""
    for d in decisions:
        DECISIONS.labels(gallery, "identified" if d.is_match else "unknown").inc()
        if d.candidates:
            BEST_SCORE.labels(gallery).observe(d.score)


def no_face(gallery: str) -> None:
    DECISIONS.labels(gallery, "no_face").inc()


def observe_ready(service, gallery: str) -> None:
    """Readiness as of this scrape (the service asks the store at most every few seconds: a scrape costs nothing)."""
    try:
        service.ready()
        READY.labels(gallery).set(1)
    except Unavailable:
        READY.labels(gallery).set(0)


def exposition() -> bytes:
    """This process's metrics, or with a shared directory every process's there, summed."""
    if SHARED_DIR is None:
        return generate_latest(REGISTRY)
    summed = CollectorRegistry()
    MultiProcessCollector(summed, path=SHARED_DIR)
    return generate_latest(summed)


class RequestMetrics(HttpMiddleware):
    """Inside ServerTiming (it reads the phases ServerTiming collects). The route is the full template of the route
    that takes the request (jobs/api/scopes.py knows them: a router included twice shares one route object), read
    when the answer starts; anything unmatched is "unmatched"."""

    def __init__(self, app, *, scopes) -> None:
        super().__init__(app)
        self.scopes = scopes

    async def http(self, scope, receive, send) -> None:
        started = time.perf_counter()

        def counted(message: dict) -> dict:
            route = self.scopes.template(scope["method"], scope["path"]) or "unmatched"
            REQUESTS.labels(route, scope["method"], str(message["status"])).inc()
            LATENCY.labels(route, scope["method"]).observe(time.perf_counter() - started)
            for name, seconds in current_phases().items():
                PHASES.labels(name).observe(seconds)
            return message

        await self.app(scope, receive, at_start(send, counted))
