"""Request ids and JSON logs: every answer carries an id (the caller's when it is sane), the audit record and the
log lines of the request carry the same; `arcmatch serve` with ARCMATCH_LOG_FORMAT=json writes only JSON lines."""

import json
import logging
import os
import subprocess
import sys

import httpx
import pytest

from jobs.api.app import create_app
from jobs.api.requests import REQUEST_ID, JsonLines
from jobs.audit import read
from jobs.settings import Settings
from tests.helpers import WRITE_ENTRY, WRITE_KEY, W, free_port, live_app, png, wait_until_healthy


@pytest.fixture(scope="module")
def api(tmp_path_factory, tiny_model_dir):
    audit = tmp_path_factory.mktemp("audit")
    settings = Settings(model=tiny_model_dir, api_keys=WRITE_ENTRY, archive=False, audit_dir=str(audit),
                        milvus_uri=str(tmp_path_factory.mktemp("ids") / "ids.db"), gallery="ids")
    with live_app(create_app(settings)) as base, httpx.Client(base_url=base, timeout=60) as client:
        yield client, audit


def test_every_answer_carries_an_id_and_the_audit_record_the_same(api):
    client, audit = api
    mine = client.post("/v1/identities/ann/faces", files=[("images", ("a.png", png(1), "image/png"))],
                       headers={**W, "X-Request-ID": "client-42.a"})
    assert mine.status_code == 201 and mine.headers["x-request-id"] == "client-42.a"
    fresh = client.get("/v1/health")
    forged = client.get("/v1/health", headers={"X-Request-ID": "x\" injected=1"})
    refused = client.get("/v1/identities/ann")  # no key: refused by the Guard, still with an id
    for answer in (fresh, forged, refused):
        assert len(answer.headers["x-request-id"]) == 32 and answer.headers["x-request-id"] != "client-42.a"
    assert refused.status_code == 401
    [record] = [r for r in read(audit) if r["action"] == "enroll"]
    assert record["request_id"] == "client-42.a" and record["gallery"] == "ids"  # the record names its gallery
    assert client.delete("/v1/identities/ann").status_code == 401  # a write refused is recorded too
    [denied] = [r for r in read(audit) if r["status"] == 401]
    assert denied["gallery"] == "ids" and denied["method"] == "DELETE"


def test_a_write_that_fails_on_a_bug_is_in_the_trail_as_a_500(api, monkeypatch):
    from jobs.service import IdentityService

    def bug(*args, **kwargs):
        raise RuntimeError("a bug in enrollment")

    monkeypatch.setattr(IdentityService, "enroll", bug)
    client, audit = api
    answer = client.post("/v1/identities/bea/faces", files=[("images", ("b.png", png(2), "image/png"))],
                         headers={**W, "X-Request-ID": "bug-1"})
    assert answer.status_code == 500 and "a bug" not in answer.text  # no internals to the caller
    [record] = [r for r in read(audit) if r["request_id"] == "bug-1"]
    assert record["status"] == 500 and record["method"] == "POST" and record["path"] == "/v1/identities/bea/faces"


def test_a_json_line_carries_the_request_id_and_the_traceback_as_one_string():
    token = REQUEST_ID.set("abc")
    try:
        raise ValueError("bad")
    except ValueError:
        record = logging.LogRecord("arcmatch.api", logging.ERROR, __file__, 1, "failed %s", ("here",), sys.exc_info())
    finally:
        REQUEST_ID.reset(token)
    outside = json.loads(JsonLines().format(record))
    assert outside["message"] == "failed here" and "request_id" not in outside and "ValueError" in outside["exception"]
    REQUEST_ID.set("abc")
    assert json.loads(JsonLines().format(record))["request_id"] == "abc"


def test_serve_with_json_logs_writes_json_lines_only(tmp_path, tiny_model_dir):
    port = free_port()
    env = {**os.environ, "ARCMATCH_MODEL": str(tiny_model_dir), "ARCMATCH_API_KEYS": WRITE_ENTRY,
           "ARCMATCH_MILVUS_URI": str(tmp_path / "j.db"), "ARCMATCH_AUDIT_DIR": str(tmp_path / "audit"),
           "ARCMATCH_ARCHIVE": "false", "ARCMATCH_LOG_FORMAT": "json"}
    server = subprocess.Popen([sys.executable, "-m", "jobs.cli", "serve", "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_until_healthy(f"http://127.0.0.1:{port}", server)
        answer = httpx.get(f"http://127.0.0.1:{port}/v1/identities", headers={"X-API-Key": WRITE_KEY,
                                                                              "X-Request-ID": "trace-7"})
        assert answer.status_code == 200
    finally:
        server.terminate()
        _, logs = server.communicate(timeout=60)
    lines = [json.loads(line) for line in logs.splitlines() if line.strip()]  # every line parses, or this fails
    assert any(line.get("request_id") == "trace-7" and "/v1/identities" in line["message"] for line in lines)
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)


def test_a_parameter_a_route_does_not_take_is_refused_and_named(api):
    """A search's threshold sent in its query string was ignored and the gallery's threshold answered: now a 400."""
    client, _ = api
    assert client.post("/v1/identities/ann/faces", files=[("images", ("a.png", png(1), "image/png"))],
                       headers=W).status_code in (200, 201)
    photo = {"image": ("q.png", png(1, 1), "image/png")}
    misplaced = client.post("/v1/search", params={"threshold": "0.99"}, files=photo, headers=W)
    assert misplaced.status_code == 400
    assert "unknown query parameter 'threshold' (threshold is a form field here)" in misplaced.json()["detail"]
    unknown = client.post("/v1/search", data={"top_k": "5"}, files=photo, headers=W)
    assert unknown.status_code == 400 and "unknown form field 'top_k'; this route takes" in unknown.json()["detail"]
    extra = client.post("/v1/calibration", json={"fpir": 0.01, "far": 0.01}, headers=W)
    assert extra.status_code == 422 and "far" in extra.json()["detail"]
    # what a route takes still goes through, in its place
    given = client.post("/v1/search", data={"threshold": "0.99"}, files=photo, headers=W)
    assert given.status_code == 200 and given.json()["faces"][0]["threshold_source"] == "given"  # the answer says
    plain = client.post("/v1/search", files=photo, headers=W).json()["faces"][0]
    assert plain["threshold_source"] == "model" and plain["threshold"] != 0.99
    assert client.get("/v1/identities", params={"limit": 1}, headers=W).status_code == 200
    for odd in ("nan", "inf"):  # said as what it is, not as "should be less than or equal to 1"
        refused = client.post("/v1/search", data={"threshold": odd}, files=photo, headers=W)
        assert refused.status_code == 422 and "finite number" in refused.json()["detail"], refused.json()


def test_a_body_of_another_media_type_than_the_routes_is_a_415_that_says_which(api):
    client, _ = api
    raw = client.post("/v1/search", content=png(1, 2), headers={**W, "Content-Type": "image/png"})
    assert raw.status_code == 415 and "takes multipart/form-data (fields " in raw.json()["detail"]
    assert "image" in raw.json()["detail"] and "not image/png" in raw.json()["detail"]
    form = client.post("/v1/calibration", data={"fpir": "0.01"}, headers=W)
    assert form.status_code == 415 and "takes application/json" in form.json()["detail"]
