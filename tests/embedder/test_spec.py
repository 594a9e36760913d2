import hashlib
import json
from pathlib import Path

import pytest

from embedder.errors import ModelError
from embedder.onnx import file_version
from embedder.spec import ModelSpec

BENCH_SPECS = Path(__file__).resolve().parents[2] / "bench" / "specs"


def test_round_trip_through_json(tmp_path):
    spec = ModelSpec("resnet18", 256, (112, 96), crop_box=(0.1, 0.2, 0.9, 0.8), channel_order="BGR",
                     backbone_args={"drop_rate": 0.1}, version="v1")
    spec.save(tmp_path)
    assert ModelSpec.load(tmp_path) == spec


@pytest.mark.parametrize("kwargs", [
    {"embedding_size": 0},
    {"input_size": (4, 4)},
    {"channel_order": "RGBA"},
    {"interpolation": "lanczos9"},
    {"std": (0.5, 0.0, 0.5)},
    {"crop_box": (0.5, 0.0, 0.4, 1.0)},
    {"alignment": "mtcnn"},
    {"alignment": "five_point", "crop_box": (0.1, 0.1, 0.9, 0.9)},
])
def test_invalid_values_are_refused(kwargs):
    with pytest.raises(ModelError):
        ModelSpec("resnet18", **kwargs)


def test_unknown_field_is_refused_not_ignored():
    with pytest.raises(ModelError, match="inputsize"):
        ModelSpec.from_dict({"backbone": "resnet18", "inputsize": [112, 112]})


def test_missing_spec_file_says_so(tmp_path):
    with pytest.raises(ModelError, match="spec.json"):
        ModelSpec.load(tmp_path)


def test_specs_older_than_alignment_still_load_and_keep_their_version(tmp_path):
    old = json.loads((BENCH_SPECS / "mobilefacenet.spec.json").read_text())
    assert "alignment" not in old
    spec = ModelSpec.from_dict(old)
    assert spec.alignment == "none"
    weights = tmp_path / "model.onnx"
    weights.write_bytes(b"weights")
    # the version that file_version gave before the field existed: its digest had no alignment in it
    digest = hashlib.sha256(b"weights")
    digest.update(repr(sorted((k, v) for k, v in spec.to_dict().items() if k not in ("version", "alignment"))).encode())
    assert file_version(weights, spec).endswith(digest.hexdigest()[:12])
    aligned = ModelSpec.from_json_file(BENCH_SPECS / "mobilefacenet_aligned.spec.json")
    assert aligned.alignment == "five_point" and aligned.crop_box is None and aligned.flip_tta
    assert file_version(weights, aligned) != file_version(weights, spec)
