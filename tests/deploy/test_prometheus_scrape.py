"""A real Prometheus (Debian's /usr/bin/prometheus) on loopback scraping a live API on Milvus Lite every second,
with a metrics key as its bearer token: what it stores moves as the traffic did, PromQL over it answers (a
histogram quantile included), and the alert rules load into it and evaluate against the real series without an
error, and so do the Grafana dashboard's queries."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import yaml

from jobs.api.app import create_app
from jobs.api.keys import new_key
from jobs.settings import Settings
from tests.deploy.prometheus import query, running, until
from tests.helpers import READ_ENTRY, WRITE_ENTRY, R, W, live_app, png

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RULES = DEPLOY / "prometheus" / "arcmatch-rules.yml"
DASHBOARD = DEPLOY / "grafana" / "arcmatch.json"
GALLERY = "scraped"  # its own gallery label: the metrics registry is the process's, shared with other tests


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory, tiny_model_dir):
    """(API client, Prometheus client): the API on Milvus Lite, and a Prometheus scraping it every second."""
    work = tmp_path_factory.mktemp("prometheus")
    # with the metrics key Prometheus is given, as a deployment that keeps its gallery names to itself runs
    scrape_key, scrape_entry = new_key("prometheus", ["metrics"])
    (work / "scrape-key").write_text(scrape_key)
    settings = Settings(model=tiny_model_dir, api_keys=f"{READ_ENTRY},{WRITE_ENTRY},{scrape_entry}",
                        milvus_uri=str(work / "m.db"), gallery=GALLERY, archive=False, audit_dir=str(work / "audit"))
    # the shipped rules, every group evaluated each second, so that a test sees every rule's health in seconds
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        group["interval"] = "1s"
    (work / "rules.yml").write_text(yaml.safe_dump(rules))
    with live_app(create_app(settings)) as base, httpx.Client(base_url=base, timeout=60) as api:
        scrape = [{"job_name": "arcmatch", "metrics_path": "/metrics",
                   "authorization": {"credentials_file": str(work / "scrape-key")},
                   "static_configs": [{"targets": [base.removeprefix("http://")]}]}]
        with running(work, scrape, (work / "rules.yml",)) as prom:
            yield api, prom


SEARCHES = 'arcmatch_http_requests_total{route="/v1/search", method="POST", status="200"}'
EMBEDS = 'sum(arcmatch_phase_duration_seconds_count{phase="embed"})'


def test_what_prometheus_stores_moves_as_the_traffic_did(prometheus):
    api, prom = prometheus
    until(lambda: query(prom, f'arcmatch_ready{{gallery="{GALLERY}"}}') == 1, 15)  # scraped, and the store answers
    assert query(prom, 'up{job="arcmatch"}') == 1
    searches, embeds = query(prom, SEARCHES) or 0, query(prom, EMBEDS) or 0

    assert api.post("/v1/identities/Ann Example/faces", files=[("images", ("a.png", png(1), "image/png"))],
                    headers=W).status_code == 201
    for _ in range(2):
        assert api.post("/v1/search", files={"image": ("p.png", png(1), "image/png")}, headers=R).status_code == 200
    strict = api.post("/v1/search", files={"image": ("p.png", png(2), "image/png")}, data={"threshold": "0.9999"},
                      headers=R)
    assert strict.status_code == 200 and strict.json()["faces"][0]["match"] is False

    # the last of the traffic, once scraped: its decision is counted in the route, its request once the answer has
    # gone, so a scrape can fall between the two; both are waited for
    until(lambda: query(prom, f'arcmatch_decisions_total{{gallery="{GALLERY}", decision="unknown"}}') == 1, 15)
    until(lambda: query(prom, SEARCHES) - searches >= 3, 15)
    assert query(prom, f'arcmatch_decisions_total{{gallery="{GALLERY}", decision="identified"}}') == 2
    assert query(prom, SEARCHES) - searches == 3
    assert query(prom, EMBEDS) - embeds >= 3
    assert query(prom, f'arcmatch_best_score_count{{gallery="{GALLERY}"}}') == 3
    median = query(prom, f'histogram_quantile(0.5, arcmatch_best_score_bucket{{gallery="{GALLERY}"}})')
    assert -0.2 <= median <= 1.0
    enrolled = query(prom, 'arcmatch_http_requests_total{route="/v1/identities/{identity}/faces", status="201"}')
    assert enrolled >= 1
    assert query(prom, 'count(arcmatch_http_request_duration_seconds_bucket{route="/v1/search"})') > 0


def test_the_alert_rules_load_and_evaluate(prometheus):
    _, prom = prometheus
    shipped = yaml.safe_load(RULES.read_text())["groups"]

    def evaluated():
        groups = prom.get("/api/v1/rules").json()["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        if len(rules) < sum(len(g["rules"]) for g in shipped) or any(r["health"] == "unknown" for r in rules):
            return None  # not every rule has been evaluated once yet
        return groups

    groups = until(evaluated, 15)
    assert [g["name"] for g in groups] == [g["name"] for g in shipped]
    broken = {r["name"]: r.get("lastError") for g in groups for r in g["rules"] if r["health"] != "ok"}
    assert not broken


def test_every_dashboard_query_runs(prometheus):
    """Each panel's PromQL, with Grafana's variables filled in, is valid and (for the traffic panels) finds the
    series the API exported: a renamed metric leaves an empty panel, never an error, so it is checked here."""
    _, prom = prometheus
    panels = json.loads(DASHBOARD.read_text())["panels"]
    traffic = ("Requests by status", "Search latency p50 / p99", "Phase latency p50 / p99", "Decisions by kind",
               "Unknown share (1 h) and the day before", "Median best score (1 h) and the day before", "Ready")

    def series_per_panel() -> dict:
        found = {}
        for panel in panels:
            for target in panel["targets"]:
                promql = target["expr"].replace("$gallery", GALLERY).replace("$__rate_interval", "1m")
                answer = prom.get("/api/v1/query", params={"query": promql}).json()
                assert answer["status"] == "success", (panel["title"], answer)
                found[panel["title"]] = found.get(panel["title"], 0) + len(answer["data"]["result"])
        return found

    def complete() -> dict | None:
        found = series_per_panel()
        return found if all(found[t] for t in traffic) else None

    found = until(complete, 60, series_per_panel)  # a rate needs two scrapes after the traffic (on a busy machine)
    assert set(found) == {p["title"] for p in panels}
