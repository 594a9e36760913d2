import pytest

from embedder.errors import ModelError
from embedder.spec import ModelSpec


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
