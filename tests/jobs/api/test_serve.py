"""`arcmatch serve --ray`: the app as a Ray Serve deployment with dynamic batching, over real HTTP."""

import asyncio
import os
import signal
import time

import httpx
import numpy as np
import pytest

from embedder.embed import TorchEmbedder
from embedder.preprocess import decode_image
from jobs.api.keys import new_key
from jobs.settings import Settings
from tests.helpers import WRITE_ENTRY, W, counts_per_process, free_port, metric_value, png, scraped, wait_until_healthy


@pytest.mark.slow
def test_serve_deployment_batches_concurrent_searches(ray_local, tmp_path, tiny_model_dir):
    from ray import serve

    from jobs.api.serve import build_application

    port = free_port()
    admin_key, admin_entry = new_key("serve_admin", ["read", "write", "admin"])
    settings = Settings(model=tiny_model_dir, api_keys=f"{WRITE_ENTRY},{admin_entry}",
                        milvus_uri=str(tmp_path / "serve.db"))
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        serve.run(build_application(settings, max_batch_size=8, batch_wait_timeout_s=0.05, num_cpus=0.5),
                  name="arcmatch", route_prefix="/")
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=60) as client:
            assert client.get("/v1/health").json() == {"status": "ok"}
            for i in range(4):
                files = [("images", ("a.png", png(40 + i), "image/png"))]
                assert client.post(f"/v1/identities/id{i}/faces", files=files, headers=W).status_code == 201

        embedder = TorchEmbedder.from_checkpoint(tiny_model_dir)
        vectors = [embedder.embed(decode_image(png(40 + i), embedder.spec)[None])[0].tolist() for i in range(4)]

        async def many():
            async with httpx.AsyncClient(base_url=base, timeout=60) as client:
                by_vector = [client.post("/v1/search/embedding", json={"embeddings": [vectors[i % 4]]}, headers=W)
                             for i in range(16)]
                by_image = [client.post("/v1/search", files={"image": ("p.png", png(40 + i % 4), "image/png")},
                                        headers=W) for i in range(8)]
                return await asyncio.gather(*by_vector, *by_image)

        responses = asyncio.run(many())
        assert all(r.status_code == 200 for r in responses)
        assert [r.json()[0]["identity"] for r in responses[:16]] == [f"id{i % 4}" for i in range(16)]
        assert [r.json()["faces"][0]["identity"] for r in responses[16:]] == [f"id{i % 4}" for i in range(8)]
        assert np.allclose([r.json()["faces"][0]["score"] for r in responses[16:]], 1.0, atol=1e-4)

        with httpx.Client(base_url=base, timeout=60, headers={"X-API-Key": admin_key}) as client:  # another gallery
            assert client.post("/v1/galleries", json={"name": "second"}).status_code == 201
            files = [("images", ("a.png", png(60), "image/png"))]
            assert client.post("/v1/galleries/second/identities/zoe/faces", files=files).status_code == 201
            found = client.post("/v1/galleries/second/search", files={"image": ("p.png", png(60, 1))}).json()
            assert found["faces"][0]["identity"] == "zoe"
            elsewhere = client.post("/v1/search", files={"image": ("p.png", png(60, 1))}).json()
            assert elsewhere["faces"][0]["identity"] is None  # zoe is in the second gallery only
    finally:
        serve.shutdown()


@pytest.mark.slow
@pytest.mark.stores("server")  # two replicas: Milvus Lite opens its file from one process only
def test_two_replicas_are_counted_together_and_the_node_port_survives_its_holder(ray_local, tmp_path,
                                                                                 tiny_model_dir, milvus_uri):
    """The node's metrics port sums both replicas (their own counts read from the shared directory say both
    served), /metrics through the proxy says the same, and when the replica holding the port dies the other
    takes it over with every count kept."""
    from ray import serve

    from jobs.api.serve import build_application

    port, node_port, shared = free_port(), free_port(), tmp_path / "metrics"
    settings = Settings(model=tiny_model_dir, api_keys=WRITE_ENTRY, milvus_uri=milvus_uri, gallery="replicas",
                        archive=False, audit_dir=str(tmp_path / "audit"), metrics_port=node_port)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        serve.run(build_application(settings, min_replicas=2, max_batch_size=1, num_cpus=0.25,
                                    metrics_dir=str(shared)), name="arcmatch", route_prefix="/")
        base, node = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{node_port}"
        with httpx.Client(base_url=base, timeout=60) as client:
            files = [("images", ("a.png", png(70), "image/png"))]
            assert client.post("/v1/identities/ray/faces", files=files, headers=W).status_code == 201

        async def searches(n: int) -> list[int]:
            async with httpx.AsyncClient(base_url=base, timeout=60) as client:
                answers = await asyncio.gather(*[client.post("/v1/search", headers=W, files={
                    "image": ("p.png", png(70, 1), "image/png")}) for _ in range(n)])
            return [a.status_code for a in answers]

        def searched(at: str) -> float:
            return metric_value(scraped(httpx, at), "arcmatch_http_requests_total", route="/v1/search",
                                method="POST", status="200")

        # bursts until both replicas have served: the proxy's router may not know the second one yet at the
        # first burst, and sent all 32 of one burst to one replica in a run of the suite
        sent, deadline = 0, time.monotonic() + 60
        while True:
            assert set(asyncio.run(searches(16))) == {200}
            sent += 16
            counted = time.monotonic() + 10  # a request is counted once its answer has gone
            while sum((by_replica := counts_per_process(shared, "arcmatch_http_requests_total",
                                                        route="/v1/search")).values()) < sent:
                assert time.monotonic() < counted, by_replica
                time.sleep(0.1)
            if len(by_replica) == 2 or time.monotonic() > deadline:
                break
        assert len(by_replica) == 2 and sum(by_replica.values()) == sent, by_replica
        assert searched(node) == sent and searched(base) == sent
        assert metric_value(scraped(httpx, node), "arcmatch_ready", gallery="replicas") == 1

        holder = int(next(line.split()[-1] for line in open_ports() if line.split()[0] == str(node_port)))
        os.kill(holder, signal.SIGKILL)  # the replica process itself: Serve replaces it
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the other replica takes the port within its retry time
            try:
                if searched(node) == sent:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        assert searched(node) == sent  # the dead replica's counts kept
        assert set(asyncio.run(searches(8))) == {200}
        assert searched(node) == sent + 8
    finally:
        serve.shutdown()


def open_ports() -> list[str]:
    """'port pid' of every listening TCP socket of this machine's processes (from /proc, no tool needed)."""
    inodes = {}
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in open(path).read().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":  # LISTEN
                inodes[fields[9]] = int(fields[1].rsplit(":", 1)[1], 16)
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    found.append(f"{inodes[target[8:-1]]} {pid}")
        except OSError:
            continue
    return found


@pytest.mark.slow
def test_serving_on_ray_ends_on_sigterm_in_one_line(tmp_path, tiny_model_dir):
    """`arcmatch serve --ray` stopped as Kubernetes or systemd stop it: SIGTERM ends the application and Ray, exit 0,
    and one line says so, where Ray's own handler printed a C++ stack dump."""
    import subprocess
    import sys

    port, log = free_port(), tmp_path / "serve.log"
    env = {**os.environ, "ARCMATCH_API_KEYS": WRITE_ENTRY, "ARCMATCH_ARCHIVE": "false"}
    with log.open("w") as err:
        server = subprocess.Popen([sys.executable, "-m", "jobs.cli", "serve", "--ray", "--model", str(tiny_model_dir),
                                   "--milvus", str(tmp_path / "g.db"), "--port", str(port)],
                                  stdout=subprocess.DEVNULL, stderr=err, env=env)
        try:
            wait_until_healthy(f"http://127.0.0.1:{port}", server, said=log.read_text)
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=120)
        finally:
            if server.poll() is None:
                server.kill()
    said = log.read_text()
    assert server.returncode == 0, said[-3000:]
    assert "arcmatch serve: stopping" in said and "SIGTERM received" not in said, said[-3000:]
