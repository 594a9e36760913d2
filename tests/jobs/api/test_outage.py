"""A Milvus server outage seen through the API: 503 with Retry-After and no foreign text while it lasts, /v1/ready
503 too, and both back by themselves within seconds once the server answers again (stopped, then SIGKILLed)."""

import os
import signal
import time

import httpx
import pytest

from jobs.api.app import create_app
from jobs.api.keys import new_key
from jobs.settings import Settings
from tests.helpers import free_port, live_app, png

KEY, ENTRY = new_key("ops", ["read", "write"])
H = {"X-API-Key": KEY}
FOREIGN = ("127.0.0.1", "pymilvus", "MilvusException", "0x", "grpc", "Traceback", "outage_")


def wait_for(check, timeout_s: float) -> float:
    """Seconds until check() is true, polling; fails the test past the timeout."""
    started = time.perf_counter()
    while not check():
        assert time.perf_counter() - started < timeout_s, f"not within {timeout_s} s"
        time.sleep(0.1)
    return time.perf_counter() - started


@pytest.mark.slow
def test_an_outage_is_a_503_and_the_service_recovers_by_itself(tmp_path, tiny_model_dir):
    milvus = pytest.importorskip("milvus", reason="the `milvus` server package is not installed")
    server = milvus.MilvusServer()
    server.set_base_dir(str(tmp_path / "milvus"))
    server.listen_port = free_port()
    server.start()
    try:
        settings = Settings(model=tiny_model_dir, api_keys=ENTRY, milvus_uri=f"http://127.0.0.1:{server.listen_port}",
                            collection="outage_faces", audit_dir=tmp_path / "audit")
        with live_app(create_app(settings)) as base, httpx.Client(base_url=base, timeout=60, headers=H) as api:
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

                server.start()  # returns once the server answers
                back = wait_for(search_ok, 30)
                wait_for(ready(200), 5)
                print(f"{outage}: first good search {back:.1f} s after the server answered")
                assert back < 15
            assert api.get("/v1/identities/ann").status_code == 200  # the acknowledged enrollment survived
    finally:
        server.stop()
