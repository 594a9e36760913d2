"""A Milvus server outage seen through the API: 503 with Retry-After and no foreign text while it lasts, /v1/ready
503 too, and both back by themselves within seconds once the server answers again (stopped, then SIGKILLed)."""

import os
import signal
import time

import httpx
import pytest

from jobs.api.app import create_app
from jobs.settings import Settings
from tests.helpers import TINY_DIM, WRITE_ENTRY, W, live_app, png

FOREIGN = ("127.0.0.1", "pymilvus", "MilvusException", "0x", "grpc", "Traceback", "outage_", "code=")


def server_searches(uri: str, collection: str) -> bool:
    """Whether a brand-new pymilvus client's search on the collection succeeds: the server itself serves again."""
    from pymilvus import MilvusClient

    try:
        client = MilvusClient(uri=uri, timeout=2, dedicated=True)
        try:
            client.search(collection, data=[[1.0] + [0.0] * (TINY_DIM - 1)], limit=1, timeout=2)
            return True
        finally:
            client.close()
    except Exception:  # noqa: BLE001  (any failure means: not yet)
        return False


def wait_for(check, timeout_s: float) -> float:
    """Seconds until check() is true, polling; fails the test past the timeout."""
    started = time.perf_counter()
    while not check():
        assert time.perf_counter() - started < timeout_s, f"not within {timeout_s} s"
        time.sleep(0.1)
    return time.perf_counter() - started


@pytest.mark.slow
@pytest.mark.disruptive
@pytest.mark.parametrize("store", ["server"])
def test_an_outage_is_a_503_and_the_service_recovers_by_itself(store, tmp_path, tiny_model_dir, milvus_server):
    server = milvus_server  # the session's: a second server cannot start beside it (see conftest)
    try:
        uri = f"http://127.0.0.1:{server.listen_port}"
        settings = Settings(model=tiny_model_dir, api_keys=WRITE_ENTRY, milvus_uri=uri,
                            gallery=f"outage_{int(time.time())}", audit_dir=tmp_path / "audit")
        with live_app(create_app(settings)) as base, httpx.Client(base_url=base, timeout=60, headers=W) as api:
            assert api.post("/v1/identities/ann/faces", files=[("images", ("a.png", png(1)))]).status_code == 201

            def search_ok() -> bool:
                return api.post("/v1/search", files={"image": ("p.png", png(1))}).status_code == 200

            def ready(status: int):
                return lambda: api.get("/v1/ready").status_code == status

            assert search_ok() and ready(200)()
            for outage in ("stop", "kill"):
                if outage == "stop":
                    server.stop()
                else:  # SIGKILL: no clean shutdown at all
                    os.kill(server.server_proc.pid, signal.SIGKILL)
                    server.server_proc.wait()
                    server.stop()
                wait_for(ready(503), 10)
                answer = api.post("/v1/search", files={"image": ("p.png", png(1))})
                assert answer.status_code == 503 and answer.headers["retry-after"] == "2"
                assert not [word for word in FOREIGN if word in answer.text], answer.text
                assert api.get("/v1/health").status_code == 200  # alive, only not ready

                server.start()
                # the server searches again once its old sessions expire (conftest: a 10 s TTL); from then the
                # service, which loads the collection again and renews its client by itself, must follow within 5 s
                server_back = wait_for(lambda: server_searches(uri, settings.gallery), 180)
                lag = wait_for(search_ok, 5)
                wait_for(ready(200), 5)
                # every route, not only searches: the alias and the galleries are read through a client the
                # index's renewal once closed under them, after which writes and listings answered 503 for good
                person = {"stop": 2, "kill": 4}[outage]
                wait_for(lambda person=person: api.post(f"/v1/identities/p{person}/faces", files=[
                    ("images", ("a.png", png(person)))]).status_code == 201, 5)
                # the listing counts every gallery of the store, other tests' too, and the restarted server loads
                # their collections again in its own time: a fresh-clone run met one still loading (a 503 once)
                wait_for(lambda: api.get("/v1/galleries").status_code == 200, 30)
                print(f"{outage}: the server searches {server_back:.1f} s after start(), the API {lag:.1f} s later")
            assert api.get("/v1/identities/ann").status_code == 200  # the acknowledged enrollment survived
    finally:
        if server.server_proc is None:  # leave it running for whatever the session does after
            server.start()


def test_a_service_started_before_its_store_answers_503_then_serves_by_itself(tmp_path, tiny_model_dir):
    """A deployment starts its pods in any order: started while the store cannot be opened (here a Milvus Lite file
    another process holds, as a server not up yet), the service answers /v1/health, 503 with Retry-After on the
    rest and arcmatch_ready 0 on /metrics, and serves once the store can be opened, without a restart (it exited,
    or its workers were started again and again, answering nothing)."""
    import subprocess
    import sys

    from tests.helpers import scraped

    ready = ("arcmatch_ready", (("gallery", "later"),))  # the sample itself: present, not only not 1

    db = tmp_path / "held.db"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pymilvus import MilvusClient; "
                               "MilvusClient(sys.argv[1]); print('held', flush=True); sys.stdin.read()", str(db)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        settings = Settings(model=tiny_model_dir, api_keys=WRITE_ENTRY, milvus_uri=str(db), gallery="later",
                            audit_dir=tmp_path / "audit", _env_file=None)
        with live_app(create_app(settings)) as base, httpx.Client(base_url=base, timeout=60, headers=W) as api:
            assert api.get("/v1/health").status_code == 200
            for answer in (api.get("/v1/ready"), api.post("/v1/search", files={"image": ("p.png", png(1))})):
                assert answer.status_code == 503 and answer.headers["retry-after"]
                assert "one process only" in answer.json()["detail"]
            assert scraped(api)[ready] == 0
            holder.stdin.close()  # the store answers from now on
            holder.wait(timeout=30)
            wait_for(lambda: api.get("/v1/ready").status_code == 200, 30)
            assert api.post("/v1/identities/ann/faces", files=[("images", ("a.png", png(1)))]).status_code == 201
            assert scraped(api)[ready] == 1
    finally:
        holder.kill()
        holder.wait()
