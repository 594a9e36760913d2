"""A long job's metrics (jobs/job_metrics.py): its stages' progress served while it runs, and its final counts pushed
to a real Prometheus Pushgateway (Debian's prometheus-pushgateway, which .ci/run installs) by `arcmatch ingest`."""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass, field

import httpx
import pytest

from jobs.job_metrics import JobMetrics, counts
from jobs.progress import Console
from tests.deploy.prometheus import query, running, until
from tests.helpers import cli_here, free_port, metric_samples
from trainer.synthetic import write_dataset


@dataclass
class Summary:
    seen: int = 5
    embedded: int = 4
    seconds: float = 1.5
    skipped: list = field(default_factory=lambda: [("a.png", "corrupt")])
    finished: bool = True  # not a count
    name: str = "x"  # nor this


def test_a_summary_gives_its_numbers_and_the_length_of_its_lists():
    assert counts(Summary()) == {"seen": 5.0, "embedded": 4.0, "seconds": 1.5, "skipped": 1.0}
    assert counts({"steps": 7, "note": "n"}) == {"steps": 7.0} and counts(None) == {}


def test_a_running_job_serves_its_stages_progress_and_then_its_counts():
    port = free_port()
    console = Console(quiet=True, interactive=False, metrics=JobMetrics("ingest", port=port))
    url = f"http://127.0.0.1:{port}/metrics"
    with console.job():
        with console.stage("ingest", total=10) as bar:
            bar.update(4)
            bar.skips(1)
            during = metric_samples(httpx.get(url).text)
            bar.update(6)
        console.finish(Summary(), "partial")
        after = metric_samples(httpx.get(url).text)
    assert during[("arcmatch_job_items_total", (("command", "ingest"), ("stage", "ingest")))] == 4
    assert during[("arcmatch_job_items_expected", (("command", "ingest"), ("stage", "ingest")))] == 10
    assert during[("arcmatch_job_skipped", (("command", "ingest"),))] == 1
    assert after[("arcmatch_job_items_total", (("command", "ingest"), ("stage", "ingest")))] == 10
    assert after[("arcmatch_job_result", (("command", "ingest"), ("what", "embedded")))] == 4
    assert ("arcmatch_job_finished_timestamp_seconds", (("command", "ingest"), ("outcome", "partial"))) in after
    assert ("arcmatch_job_stage_seconds", (("command", "ingest"), ("stage", "ingest"))) in after
    with pytest.raises(httpx.ConnectError):  # the job's endpoint closes with it
        httpx.get(url)


def test_a_failed_job_says_so_and_a_gateway_that_is_down_costs_nothing_but_a_line(capsys):
    metrics = JobMetrics("cluster", pushgateway=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(RuntimeError), Console(quiet=True, interactive=False, metrics=metrics).job():
        raise RuntimeError("the job broke")
    found = metric_samples(metrics.registry_text())
    assert ("arcmatch_job_finished_timestamp_seconds", (("command", "cluster"), ("outcome", "failed"))) in found
    assert "could not push the job's metrics" in capsys.readouterr().err


@pytest.fixture
def pushgateway(tmp_path):
    binary = shutil.which("prometheus-pushgateway") or shutil.which("pushgateway")
    if binary is None:
        pytest.skip("no Pushgateway: apt-get install prometheus-pushgateway (.ci/run does)")
    port = free_port()
    process = subprocess.Popen([binary, f"--web.listen-address=127.0.0.1:{port}"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while True:
        try:
            if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.time() < deadline and process.poll() is None, "the Pushgateway did not start"
        time.sleep(0.1)
    yield url
    process.terminate()
    process.wait(timeout=30)


@pytest.mark.slow
def test_an_ingestion_pushes_its_progress_and_final_counts(ray_local, pushgateway, tmp_path, tiny_model_dir,
                                                           monkeypatch, capsys):
    root = tmp_path / "gallery"
    write_dataset(root, range(3), 2, size=32)
    (root / "person_00001" / "broken.png").write_bytes(b"not an image")
    monkeypatch.setenv("ARCMATCH_PUSHGATEWAY", pushgateway)
    monkeypatch.setenv("ARCMATCH_GALLERY", "pushed")
    code, _, err = cli_here(capsys, "ingest", str(root), "--model", str(tiny_model_dir), "--milvus",
                            str(tmp_path / "g.db"), "--index", "FLAT", "--errors", str(tmp_path / "e.csv"))
    assert code == 3, err[-2000:]  # finished, with the broken file skipped
    found = metric_samples(httpx.get(f"{pushgateway}/metrics").text)
    group = (("command", "ingest"), ("gallery", "pushed"), ("instance", ""), ("job", "arcmatch"))

    def value(name: str, **labels) -> float:
        return found[(name, tuple(sorted({**dict(group), **labels}.items())))]

    assert value("arcmatch_job_items_total", stage="ingest") == 7  # every file seen, the broken one included
    assert value("arcmatch_job_result", what="embedded") == 6 and value("arcmatch_job_result", what="skipped") == 1
    assert value("arcmatch_job_finished_timestamp_seconds", outcome="partial") > 0

    # and through a real Prometheus scraping the gateway, as a dashboard reads them
    scrape = [{"job_name": "pushgateway", "honor_labels": True,
               "static_configs": [{"targets": [pushgateway.removeprefix("http://")]}]}]
    with running(tmp_path, scrape) as prom:
        selector = '{job="arcmatch", command="ingest", gallery="pushed"'
        until(lambda: query(prom, f'arcmatch_job_result{selector}, what="embedded"}}') == 6, 30)
        assert query(prom, f'arcmatch_job_result{selector}, what="skipped"}}') == 1
        assert query(prom, f'sum(arcmatch_job_items_total{selector}}})') == 7


def test_a_second_job_on_the_same_port_goes_on_without_its_endpoint(capsys):
    port = free_port()
    first = JobMetrics("ingest", port=port)
    second = JobMetrics("cluster", port=port)
    try:
        assert second.server is None and "port" in capsys.readouterr().err
        assert "arcmatch_job_started_timestamp_seconds" in httpx.get(f"http://127.0.0.1:{port}/metrics").text
    finally:
        first.close()
        second.close()

