"""`arcmatch serve --ray`: the app as a Ray Serve deployment with dynamic batching, over real HTTP."""

import asyncio

import httpx
import numpy as np
import pytest

from embedder.embed import TorchEmbedder
from embedder.preprocess import decode_image
from jobs.api.keys import new_key
from jobs.settings import Settings
from tests.helpers import WRITE_ENTRY, W, free_port, png


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
