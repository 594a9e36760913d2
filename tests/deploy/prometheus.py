"""A real Prometheus (Debian's /usr/bin/prometheus) for a test: started on loopback with the test's own scrape
configuration, asked through its HTTP API, stopped with the test."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.helpers import free_port


@contextlib.contextmanager
def running(work: Path, scrape_configs: list[dict], rule_files: tuple[Path, ...] = ()):
    """A Prometheus scraping every second and evaluating rules every second; yields a client for its HTTP API.
    Skips the test where it is not installed."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus is not installed (Debian: apt-get install prometheus; .ci/run installs it)")
    (work / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(path) for path in rule_files], "scrape_configs": scrape_configs}))
    port = free_port()
    log_path = work / "prometheus.log"
    with log_path.open("w") as log:
        process = subprocess.Popen([binary, f"--config.file={work / 'prometheus.yml'}",
                                    f"--storage.tsdb.path={work / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                                   stdout=log, stderr=subprocess.STDOUT)
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as prom:
                until(lambda: ready(prom), 30, lambda: log_path.read_text()[-2000:])
                yield prom
        finally:
            process.terminate()
            process.wait(timeout=30)


def ready(prom: httpx.Client) -> bool:
    try:
        return prom.get("/-/ready").status_code == 200
    except httpx.TransportError:
        return False


def until(check, timeout_s: float, why=lambda: ""):
    """Polls `check` every 0.2 s until it returns something true; fails after `timeout_s` with `why()`."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout_s} s: {why()}")
        time.sleep(0.2)


def query(prom: httpx.Client, promql: str) -> float | None:
    """The single value of an instant PromQL query, or None when it returns no series."""
    answer = prom.get("/api/v1/query", params={"query": promql}).json()
    assert answer["status"] == "success", answer
    result = answer["data"]["result"]
    assert len(result) <= 1, result
    return float(result[0]["value"][1]) if result else None
