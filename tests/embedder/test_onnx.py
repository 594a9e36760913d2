"""ONNX embedding: our own exported models, and the third-party MobileFaceNet from ../shared when present."""

import json

import numpy as np
import pytest

from embedder.embed import TorchEmbedder, open_embedder
from embedder.errors import ModelError
from embedder.onnx import OnnxEmbedder
from embedder.spec import ModelSpec


@pytest.fixture(scope="module")
def exported(tiny_onnx_dir):
    return tiny_onnx_dir


def test_export_matches_torch_with_a_dynamic_batch(exported, tiny_model_dir):
    torch_embedder = TorchEmbedder.from_checkpoint(tiny_model_dir)
    onnx_embedder = open_embedder(exported)
    assert isinstance(onnx_embedder, OnnxEmbedder)
    assert onnx_embedder.spec == torch_embedder.spec  # same version: same collection
    assert onnx_embedder.calibration == torch_embedder.calibration
    images = np.random.default_rng(0).integers(0, 256, size=(7, 32, 32, 3), dtype=np.uint8)
    diff = np.abs(onnx_embedder.embed(images) - torch_embedder.embed(images)).max()
    assert diff < 1e-4, f"max abs difference {diff}"
    assert onnx_embedder.batch_size == 64


def test_flip_tta_is_the_sum_of_both_views(exported):
    plain = OnnxEmbedder.from_path(exported)
    tta = OnnxEmbedder(exported / "model.onnx", ModelSpec.from_dict({**plain.spec.to_dict(), "flip_tta": True}))
    images = np.random.default_rng(1).integers(0, 256, size=(3, 32, 32, 3), dtype=np.uint8)
    both = plain.embed(images) + plain.embed(images[:, :, ::-1])
    expected = both / np.linalg.norm(both, axis=1, keepdims=True)
    np.testing.assert_allclose(tta.embed(images), expected, atol=1e-5)


def test_onnx_file_needs_its_spec(exported, tmp_path):
    lone = tmp_path / "m.onnx"
    lone.write_bytes((exported / "model.onnx").read_bytes())
    with pytest.raises(ModelError, match="spec.json"):
        open_embedder(lone)
    (tmp_path / "m.spec.json").write_text(json.dumps({**ModelSpec.load(exported).to_dict(), "version": ""}))
    embedder = open_embedder(lone)
    assert embedder.spec.version.startswith("onnx-m-d64-")


def test_wrong_input_size_is_refused(exported):
    spec = ModelSpec.from_dict({**ModelSpec.load(exported).to_dict(), "input_size": [48, 48]})
    with pytest.raises(ModelError, match="32x32"):
        OnnxEmbedder(exported / "model.onnx", spec)


def test_a_spec_that_says_another_embedding_size_is_refused_when_the_model_opens(exported):
    spec = ModelSpec.from_dict({**ModelSpec.load(exported).to_dict(), "embedding_size": 128})
    with pytest.raises(ModelError, match="gives 64-d embeddings, its spec says embedding_size 128"):
        OnnxEmbedder(exported / "model.onnx", spec)


MOBILEFACENET_SPEC = {"backbone": "MobileFaceNet", "embedding_size": 128, "input_size": [112, 112],
                      "mean": [0.5, 0.5, 0.5], "std": [128 / 255] * 3, "crop_box": [0.22, 0.18, 0.78, 0.74],
                      "flip_tta": True}


def test_fixed_batch_third_party_model(shared_data, tmp_path):
    model = shared_data.parent / "models" / "mobilefacenet" / "MobileFaceNet.onnx"
    embedder = OnnxEmbedder(model, ModelSpec.from_dict(MOBILEFACENET_SPEC))
    assert embedder.batch_size == 1
    from embedder.preprocess import decode_image

    paths = sorted((shared_data / "lfw_gray" / "Aaron_Peirsol").glob("*.jpg"))[:2]
    paths += sorted((shared_data / "lfw_gray" / "Abba_Eban").glob("*.jpg"))[:1]
    images = np.stack([decode_image(p.read_bytes(), embedder.spec) for p in paths])
    vectors = embedder.embed(images)
    assert vectors.shape == (3, 128)
    same, different = vectors[0] @ vectors[1], vectors[0] @ vectors[2]
    assert same > different


def test_an_export_of_a_flip_tta_model_embeds_as_the_checkpoint_does(tiny_model_dir, tmp_path):
    """The two views' raw vectors are summed by the checkpoint; an export that normalised each first gave vectors
    0.997 alike to the checkpoint's under the same version, in the same collection."""
    from dataclasses import replace

    from embedder.export import export_onnx

    checkpoint = TorchEmbedder.from_checkpoint(tiny_model_dir)
    checkpoint.spec = replace(checkpoint.spec, flip_tta=True)
    export_onnx(checkpoint.model, tmp_path / "onnx")
    onnx = open_embedder(tmp_path / "onnx")
    assert onnx.spec.flip_tta and onnx.spec.version == checkpoint.spec.version
    images = np.random.default_rng(2).integers(0, 256, size=(9, 32, 32, 3), dtype=np.uint8)
    diff = np.abs(onnx.embed(images) - checkpoint.embed(images)).max()
    assert diff < 1e-4, f"max abs difference {diff}"
