"""Fixtures for the face detection and alignment tests: the YuNet files and LFW-gray from ../shared, when there."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SHARED_MODELS = Path(__file__).resolve().parents[2].parent / "shared" / "models"
YUNET_DEFAULT = "face_detection_yunet_2026may.onnx"


@pytest.fixture(scope="session")
def shared_models() -> Path:
    if not (SHARED_MODELS / "yunet").is_dir():
        pytest.skip(f"face models not found at {SHARED_MODELS} (../shared is absent on a fresh machine)")
    return SHARED_MODELS


@pytest.fixture(scope="session")
def yunet(shared_models):
    """The documented default detector, one thread (tests run beside each other)."""
    from embedder.detect import YuNetDetector

    return YuNetDetector(shared_models / "yunet" / YUNET_DEFAULT, threads=1)


@pytest.fixture(scope="session")
def lfw_image(shared_data):
    """lfw_image(name, n) -> the (250, 250, 3) uint8 RGB array of LFW-gray's <name>_<n>.jpg."""

    def load(name: str, number: int = 1) -> np.ndarray:
        path = shared_data / "lfw_gray" / name / f"{name}_{number:04d}.jpg"
        return np.asarray(Image.open(path).convert("RGB"))

    return load
