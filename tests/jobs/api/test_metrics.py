"""/metrics: open, in Prometheus's text format, counting what the traffic did (requests by route template and
status, phases, the decisions and best scores per gallery, readiness), and naming no identity or face."""

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from jobs.api.app import create_app
from jobs.settings import Settings
from tests.helpers import READ_ENTRY, WRITE_ENTRY, R, W, live_app, png


@pytest.fixture(scope="module")
def api(tmp_path_factory, tiny_model_dir):
    settings = Settings(model=tiny_model_dir, api_keys=f"{READ_ENTRY},{WRITE_ENTRY}",
                        milvus_uri=str(tmp_path_factory.mktemp("metrics") / "m.db"), gallery="watched",
                        archive=False, audit_dir=str(tmp_path_factory.mktemp("audit")))
    with live_app(create_app(settings)) as base, httpx.Client(base_url=base, timeout=60) as client:
        yield client


def samples(client) -> dict:
    answer = client.get("/metrics")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(answer.text) for s in family.samples}


def value(found: dict, name: str, **labels) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def test_the_counters_move_as_the_traffic_does(api):
    before = samples(api)
    files = [("images", ("a.png", png(1), "image/png"))]
    assert api.post("/v1/identities/Ann Example/faces", files=files, headers=W).status_code == 201
    for _ in range(2):
        assert api.post("/v1/search", files={"image": ("p.png", png(1), "image/png")}, headers=R).status_code == 200
    strict = api.post("/v1/search", files={"image": ("p.png", png(2), "image/png")}, data={"threshold": "0.9999"},
                      headers=R)
    assert strict.status_code == 200 and strict.json()["faces"][0]["match"] is False
    assert api.post("/v1/search", headers=R).status_code == 422  # no photo: a 4xx counted as such
    after = samples(api)

    def moved(name: str, **labels) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("arcmatch_decisions_total", gallery="watched", decision="identified") == 2
    assert moved("arcmatch_decisions_total", gallery="watched", decision="unknown") == 1
    assert moved("arcmatch_best_score_count", gallery="watched") == 3
    assert moved("arcmatch_http_requests_total", route="/v1/search", method="POST", status="200") == 3
    assert moved("arcmatch_http_requests_total", route="/v1/search", method="POST", status="422") == 1
    assert moved("arcmatch_http_requests_total", route="/v1/identities/{identity}/faces", method="POST",
                 status="201") == 1
    for phase in ("decode", "embed", "search"):
        assert moved("arcmatch_phase_duration_seconds_count", phase=phase) >= 3
    assert value(after, "arcmatch_ready", gallery="watched") == 1
    assert moved("arcmatch_milvus_calls_total", call="search", outcome="ok") >= 3  # the store's side of it
    assert moved("arcmatch_milvus_call_duration_seconds_count", call="search") >= 3


def test_nothing_names_a_person_or_a_face_and_no_key_is_needed(api):
    enrolled = api.post("/v1/identities/Bea Private/faces", files=[("images", ("b.png", png(3), "image/png"))],
                        headers=W).json()
    api.get("/v1/identities/Bea Private", headers=R)
    text = httpx.get(str(api.base_url).rstrip("/") + "/metrics").text  # no key
    assert "Bea" not in text and "Private" not in text and enrolled["face_ids"][0] not in text
    assert 'route="/v1/identities/{identity}"' in text


def test_metrics_can_be_turned_off(tmp_path, tiny_model_dir):
    settings = Settings(model=tiny_model_dir, api_keys=READ_ENTRY, milvus_uri=str(tmp_path / "off.db"),
                        gallery="quiet", archive=False, metrics=False)
    with live_app(create_app(settings)) as base:
        assert httpx.get(f"{base}/metrics").status_code == 404
        assert httpx.get(f"{base}/v1/health").status_code == 200
