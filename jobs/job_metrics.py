"""A long job's progress and final counts as Prometheus metrics: ingest, reembed, cluster, train and the demo.

Why: a dashboard should show a running job's rate and its skips without anyone reading its logs, and a batch job's
final counts should outlive its process. Every long job already reports through one Console (jobs/progress.py);
its stages feed these metrics, so no job carries metric code of its own.

Two ways out, both off by default (jobs/settings.py):
- `ARCMATCH_JOB_METRICS_PORT`: the job serves /metrics on that port while it runs, for a scrape of the process
  that drives it (on a cluster, the Ray head's job driver);
- `ARCMATCH_PUSHGATEWAY`: the job pushes its metrics to a Prometheus Pushgateway when a stage ends and when it
  finishes, grouped by job and gallery: the way Prometheus advises for batch jobs, whose last values a scrape
  would miss once the process is gone. A push that fails is said on stderr and never fails the job.

Labels are the job's command (not `job`, which Prometheus gives its own scrape job and the Pushgateway its group)
and the stage's name, and the gallery's configured name on the push; never a path or an identity.
"""

from __future__ import annotations

import dataclasses
import sys
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest, push_to_gateway, start_http_server


class JobMetrics:
    """One job's metrics, in a registry of its own (a process may run the API's metrics beside it)."""

    def __init__(self, job: str, *, gallery: str | None = None, port: int | None = None,
                 pushgateway: str | None = None) -> None:
        self.job, self.gallery, self.pushgateway = job, gallery, pushgateway
        self.registry = registry = CollectorRegistry()
        self.items = Counter("arcmatch_job_items", "Items a job's stage has processed so far", ["command", "stage"],
                             registry=registry)
        self.expected = Gauge("arcmatch_job_items_expected", "Items a job's stage will process, once known",
                              ["command", "stage"], registry=registry)
        self.skipped = Gauge("arcmatch_job_skipped", "Items a job has skipped so far (the job's report says why)",
                             ["command"], registry=registry)
        self.stage_seconds = Gauge("arcmatch_job_stage_seconds", "Wall time of each finished stage",
                                   ["command", "stage"], registry=registry)
        self.result = Gauge("arcmatch_job_result", "A finished job's final counts, by what each counts",
                            ["command", "what"], registry=registry)
        self.started = Gauge("arcmatch_job_started_timestamp_seconds", "When the job started", ["command"],
                             registry=registry)
        self.finished = Gauge("arcmatch_job_finished_timestamp_seconds", "When the job finished, by outcome "
                              "(ok, partial: finished with skips, failed)", ["command", "outcome"], registry=registry)
        self.started.labels(job).set(time.time())
        self.server = None
        if port:
            try:
                self.server = start_http_server(port, addr="0.0.0.0", registry=registry)[0]
            except OSError as exc:  # another job on this machine serves there: this one goes on without
                print(f"arcmatch: the job's metrics are not served: port {port} is taken ({exc.strerror})",
                      file=sys.stderr)

    def stage(self, stage: str, total: int | None) -> None:
        self.items.labels(self.job, stage).inc(0)  # present from the start, at zero
        if total:
            self.expected.labels(self.job, stage).set(total)

    def advanced(self, stage: str, n: int) -> None:
        if n > 0:
            self.items.labels(self.job, stage).inc(n)

    def skips(self, n: int) -> None:
        self.skipped.labels(self.job).set(n)

    def stage_ended(self, stage: str, seconds: float) -> None:
        self.stage_seconds.labels(self.job, stage).set(seconds)
        self.push()

    def finish(self, summary=None, outcome: str = "ok") -> None:
        """The job's final counts: every number of `summary` (a dataclass or a dict), and the length of every list
        in it (skipped items), then one last push."""
        for what, value in counts(summary).items():
            self.result.labels(self.job, what).set(value)
        self.finished.labels(self.job, outcome).set(time.time())
        self.push()

    def registry_text(self) -> str:
        """The metrics as Prometheus's text format, as a scrape or a push sees them."""
        return generate_latest(self.registry).decode()

    def push(self) -> None:
        if not self.pushgateway:
            return
        grouping = {"command": self.job, **({"gallery": self.gallery} if self.gallery else {})}
        try:
            push_to_gateway(self.pushgateway, job="arcmatch", registry=self.registry,
                            grouping_key=grouping, timeout=5)
        except OSError as exc:  # the gateway is down or unreachable: the job goes on
            print(f"arcmatch: could not push the job's metrics to {self.pushgateway} ({exc.__class__.__name__})",
                  file=sys.stderr)

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


def counts(summary) -> dict[str, float]:
    """The numbers a summary holds: numeric fields as they are, lists by their length; the rest left out."""
    if summary is None:
        return {}
    fields = dataclasses.asdict(summary) if dataclasses.is_dataclass(summary) else dict(summary)
    out = {}
    for name, value in fields.items():
        if isinstance(value, bool):
            continue
        if isinstance(value, int | float):
            out[name] = float(value)
        elif isinstance(value, list | tuple | set):
            out[name] = float(len(value))
    return out
