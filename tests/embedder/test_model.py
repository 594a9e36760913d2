from dataclasses import replace

import numpy as np
import pytest
import torch

from embedder.checkpoint import WEIGHTS_FILE, Calibration, load_embedder, save_embedder
from embedder.embed import TorchEmbedder
from embedder.errors import ModelError
from embedder.model import FaceEmbedder, with_output_stride
from embedder.spec import ModelSpec


def test_unknown_backbone_fails_clearly():
    with pytest.raises(ModelError, match="no_such_net"):
        FaceEmbedder(ModelSpec("no_such_net"))


def test_neck_width_is_measured(tiny_spec):
    # MobileNetV3's pooled output (1024) is wider than its num_features (576)
    model = FaceEmbedder(ModelSpec("mobilenetv3_small_050", embedding_size=8, input_size=(32, 32)))
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 8)


def test_checkpoint_round_trip_keeps_outputs_and_version(tmp_path, tiny_spec):
    torch.manual_seed(1)
    model = FaceEmbedder(tiny_spec).eval()
    spec = save_embedder(model, tmp_path)
    assert spec.version.startswith("test_resnet-d16-")
    loaded = load_embedder(tmp_path)
    assert loaded.spec == spec
    x = torch.randn(3, 3, 32, 32)
    torch.testing.assert_close(loaded.embed(x), model.embed(x))
    assert save_embedder(loaded, tmp_path / "again").version == spec.version


def test_saving_leaves_a_training_model_as_it_was(tmp_path, tiny_spec):
    model = FaceEmbedder(tiny_spec).train()  # the training loop saves its live embedder at each epoch's end
    spec = save_embedder(model, tmp_path)
    assert model.training and model.spec == tiny_spec and spec.version


def test_either_layout_gives_the_same_embeddings_and_the_same_file(tmp_path, tiny_spec):
    torch.manual_seed(2)
    nhwc = FaceEmbedder(tiny_spec).eval()
    nchw = FaceEmbedder(tiny_spec, channels_last=False).eval()
    nchw.load_state_dict(nhwc.state_dict())
    def convs(model):  # 3x3 and larger: a 1x1 kernel is contiguous in both layouts
        return [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.weight[0, 0].numel() > 1]

    assert convs(nhwc) and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs(nhwc))
    assert not any(w.is_contiguous(memory_format=torch.channels_last) for w in convs(nchw))
    x = torch.randn(4, 3, 32, 32)
    torch.testing.assert_close(nhwc.embed(x), nchw.embed(x), atol=1e-5, rtol=1e-4)
    # the file holds plain contiguous tensors, so the version does not depend on the layout the model ran in
    assert save_embedder(nhwc, tmp_path / "a").version == save_embedder(nchw, tmp_path / "b").version
    saved = torch.load(tmp_path / "a" / WEIGHTS_FILE, weights_only=True)
    assert all(t.is_contiguous() for t in saved.values())


def test_the_embedder_feeds_either_layout_alike_mirror_images_included(tiny_spec):
    torch.manual_seed(3)
    spec = replace(tiny_spec, flip_tta=True)
    nhwc, nchw = FaceEmbedder(spec), FaceEmbedder(spec, channels_last=False)
    nchw.load_state_dict(nhwc.state_dict())
    fast, plain = TorchEmbedder(nhwc), TorchEmbedder(nchw)
    assert fast.channels_last and not plain.channels_last
    images = np.random.default_rng(3).integers(0, 256, size=(5, 32, 32, 3), dtype=np.uint8)
    np.testing.assert_allclose(fast.embed(images), plain.embed(images), atol=1e-5)


def test_embedder_returns_unit_vectors_in_batches(tiny_model_dir):
    embedder = TorchEmbedder.from_checkpoint(tiny_model_dir, batch_size=4)
    images = np.random.default_rng(0).integers(0, 256, size=(10, 32, 32, 3), dtype=np.uint8)
    vectors = embedder.embed(images)
    assert vectors.shape == (10, 64) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(embedder.embed(images[:3]), vectors[:3], atol=1e-5)  # batching changes nothing
    assert isinstance(embedder.calibration, Calibration)


def test_weights_that_do_not_fit_the_spec_are_refused(tmp_path, tiny_spec):
    save_embedder(FaceEmbedder(tiny_spec), tmp_path)
    ModelSpec(**{**tiny_spec.to_dict(), "embedding_size": 32}).save(tmp_path)
    with pytest.raises(ModelError, match="does not match"):
        load_embedder(tmp_path)


def test_a_model_folder_that_does_not_exist_is_not_found_and_one_without_a_spec_is_bad_input(tmp_path):
    from common.errors import NotFound

    with pytest.raises(NotFound, match="does not exist"):  # exit 4, as every other command says it
        load_embedder(tmp_path / "nowhere")
    with pytest.raises(ModelError, match="not an arcmatch model directory"):
        load_embedder(tmp_path)


def test_output_stride_16_where_the_backbone_takes_it():
    spec, note = with_output_stride(ModelSpec("test_resnet", embedding_size=16, input_size=(112, 112)), 16)
    assert spec.backbone_args == {"output_stride": 16} and "built with output_stride 16" in note
    features = FaceEmbedder(spec).backbone.forward_features(torch.zeros(1, 3, 112, 112))
    assert features.shape[-2:] == (7, 7)  # stride 32 would end on 4x4
    assert FaceEmbedder(ModelSpec.from_dict(spec.to_dict())).neck.fc.in_features == features.shape[1]

    vit = ModelSpec("test_vit", embedding_size=16, input_size=(112, 112), backbone_args={"img_size": 112})
    unchanged, note = with_output_stride(vit, 16)
    assert unchanged == vit and "own stride is kept" in note


def test_an_unpooled_backbone_gives_the_neck_its_whole_map(tmp_path):
    from embedder.export import export_onnx
    from embedder.onnx import OnnxEmbedder

    spec = ModelSpec("test_resnet", embedding_size=16, input_size=(64, 64), backbone_args={"global_pool": ""})
    torch.manual_seed(0)
    model = FaceEmbedder(spec).eval()
    features = model.backbone(torch.zeros(1, 3, 64, 64))
    assert features.shape[-2:] == (2, 2) and model.neck.fc.in_features == features[0].numel()
    # the neck weighs each position: the same features moved to another corner embed differently
    ones = torch.zeros_like(features)
    ones[..., 0, 0] = 1.0
    assert not torch.allclose(model.neck(ones), model.neck(ones.flip(-1).flip(-2)), atol=1e-4)

    saved = save_embedder(model, tmp_path / "model")
    export_onnx(load_embedder(tmp_path / "model"), tmp_path / "onnx")
    images = np.random.default_rng(0).integers(0, 256, size=(5, 64, 64, 3), dtype=np.uint8)
    torch_vectors = TorchEmbedder.from_checkpoint(tmp_path / "model").embed(images)
    onnx = OnnxEmbedder.from_path(tmp_path / "onnx")
    assert onnx.spec == saved
    np.testing.assert_allclose(onnx.embed(images), torch_vectors, atol=1e-4)
