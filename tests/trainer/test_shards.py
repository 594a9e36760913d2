import io
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from common.errors import Conflict
from embedder.sources import LabelledImage, list_images
from trainer.shards import decode_rows, is_shard_dir, read_classes, write_shards
from trainer.synthetic import write_dataset


def test_shards_hold_bytes_labels_and_a_fixed_class_list(tmp_path, tiny_spec):
    write_dataset(tmp_path / "data", range(3), 4, size=32)
    (tmp_path / "notes.png").write_text("not a picture")
    items = list_images(tmp_path / "data") + [LabelledImage(str(tmp_path / "gone.jpg"), "person_00001"),
                                              LabelledImage(str(tmp_path / "notes.png"), "person_00002")]
    summary = write_shards(items, tmp_path / "shards", rows_per_shard=5)
    assert (summary.rows, summary.shards, summary.classes) == (12, 3, 3)
    assert summary.skipped[0][0].endswith("gone.jpg") and "unreadable" in summary.skipped[0][1]
    assert summary.skipped[1][0].endswith("notes.png") and "unsupported image format" in summary.skipped[1][1]
    assert is_shard_dir(tmp_path / "shards")
    assert read_classes(tmp_path / "shards") == sorted({i.identity for i in items})
    table = pq.read_table(sorted((tmp_path / "shards").glob("*.parquet")))
    assert table.num_rows == 12 and sorted(set(table["label"].to_pylist())) == [0, 1, 2]
    assert table["image"][0].as_py() == open(items[0].path, "rb").read()
    assert json.loads((tmp_path / "shards" / "classes.json").read_text())["rows"] == 12


def test_an_identity_whose_every_file_was_skipped_gets_no_label(tmp_path):
    """Its label would be a class centre trained with no photo of it: the labels are made 0..n-1 again over the
    identities that kept a row, in every shard, and the summary names the ones left out."""
    write_dataset(tmp_path / "data", range(3), 3, size=32)
    items = list_images(tmp_path / "data")
    (tmp_path / "a.png").write_text("not a picture")
    gone = [LabelledImage(str(tmp_path / "a.png"), "aaa first"), LabelledImage(str(tmp_path / "b.jpg"), "mmm")]
    summary = write_shards(gone + items, tmp_path / "shards", rows_per_shard=4)
    assert summary.classes == 3 and summary.emptied == ["aaa first", "mmm"]
    names = read_classes(tmp_path / "shards")
    assert names == sorted({i.identity for i in items})
    table = pq.read_table(sorted((tmp_path / "shards").glob("*.parquet")))
    assert [names[label] for label in table["label"].to_pylist()] == table["identity"].to_pylist()
    assert sorted(set(table["label"].to_pylist())) == [0, 1, 2]


def test_writing_into_a_non_empty_directory_is_refused(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x").write_text("x")
    with pytest.raises(Conflict, match="not empty"):
        write_shards([], tmp_path / "out")


def test_decode_rows_marks_corrupt_images_instead_of_failing(tmp_path, tiny_spec):
    write_dataset(tmp_path / "data", range(1), 2, size=32)
    good = list_images(tmp_path / "data")[0]
    batch = {"image": np.array([open(good.path, "rb").read(), b"not an image"], dtype=object),
             "label": np.array([0, 0], dtype=np.int32), "path": np.array([good.path, "bad.jpg"], dtype=object)}
    out = decode_rows(batch, tiny_spec)
    assert out["ok"].tolist() == [True, False]
    assert out["image"].shape == (2, 32, 32, 3) and out["image"][0].any() and not out["image"][1].any()


def test_aligned_shards_hold_faces_and_make_a_five_point_model(tmp_path, shared_data, tiny_spec):
    """`prepare --align`: each photo's face, aligned to the template, stored as a PNG; a photo without a face is
    skipped with the reason; a model trained on the shards carries alignment five_point."""
    from embedder.detect import open_detector
    from embedder.faces import FacePolicy
    from trainer.shards import decode_spec, read_alignment, shard_spec

    detector = open_detector(shared_data.parent / "models" / "yunet" / "face_detection_yunet_2026may.onnx",
                             threads=1)
    names = ["Colin_Powell", "Tony_Blair"]
    items = [LabelledImage(str(shared_data / "lfw_gray" / n / f"{n}_{i:04d}.jpg"), n) for n in names for i in (1, 2)]
    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((200, 200, 3), 128, np.uint8)).save(blank)
    items.append(LabelledImage(str(blank), "Tony_Blair"))
    summary = write_shards(items, tmp_path / "shards", policy=FacePolicy(detector, select="largest"),
                           aligned_size=(96, 96))
    assert summary.rows == 4 and [s[0] for s in summary.skipped] == [str(blank)]
    assert "no face" in summary.skipped[0][1]
    assert read_alignment(tmp_path / "shards") == {"size": [96, 96]}
    spec = shard_spec(tiny_spec, tmp_path / "shards")
    assert spec.alignment == "five_point" and shard_spec(tiny_spec, tmp_path) == tiny_spec
    table = pq.read_table(sorted((tmp_path / "shards").glob("*.parquet")))
    decoded = decode_rows(table.to_pydict() | {"label": np.asarray(table["label"])}, decode_spec(spec))
    assert decoded["ok"].all() and decoded["image"].shape == (4, 32, 32, 3)
    assert Image.open(io.BytesIO(table["image"][0].as_py())).size == (96, 96)
