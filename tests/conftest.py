"""Shared fixtures: a real local Ray, real Milvus Lite files, tiny models, and ../shared when it is there."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(scope="session")
def ray_local():
    import ray

    from jobs.runtime import init_ray

    init_ray(num_cpus=2)
    yield ray
    ray.shutdown()


@pytest.fixture
def milvus_lite(tmp_path):
    from indexer.store import connect

    client = connect(str(tmp_path / "faces.db"))
    yield client
    client.close()


@pytest.fixture(scope="session")
def tiny_spec():
    from embedder.spec import ModelSpec

    return ModelSpec(backbone="test_resnet", embedding_size=16, input_size=(32, 32))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_spec):
    """An untrained tiny embedder checkpoint with a calibration: enough to exercise every pipeline."""
    import torch

    from embedder.checkpoint import Calibration, save_embedder
    from embedder.model import FaceEmbedder

    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("tiny-model")
    save_embedder(FaceEmbedder(tiny_spec), directory)
    Calibration(threshold=0.5, target_far=1e-3, measured_far=1e-3, tar=0.9, pairs=100).save(directory)
    return directory


@pytest.fixture(scope="session")
def shared_data() -> Path:
    data = SHARED / "data"
    if not data.is_dir():
        pytest.skip(f"real face data not found at {data} (../shared is absent on a fresh machine)")
    return data
