"""The archived face (embedder/archiving.py): what a model reads back from it is what it read from the photo."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageFilter

from embedder.align import align_face
from embedder.archiving import ARCHIVE_SIZE, archive_view, decode, encode, model_input
from embedder.detect import Face, rotate
from embedder.errors import ModelError
from embedder.faces import PreparedFace
from embedder.preprocess import crop_and_resize
from embedder.quality import measure
from embedder.spec import ModelSpec

ALIGNED = ModelSpec("m", 16, (112, 112), alignment="five_point")
CROPPED = ModelSpec("m", 16, (64, 64), crop_box=(0.2, 0.2, 0.8, 0.8))
LANDMARKS = np.array([[150.0, 170.0], [210.0, 168.0], [181.0, 205.0], [156.0, 240.0], [206.0, 238.0]])


def photo(size: int = 400) -> np.ndarray:
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8))
    return np.asarray(noise.resize((size, size), Image.Resampling.BICUBIC).filter(ImageFilter.GaussianBlur(2)))


def prepared(image: np.ndarray, landmarks: np.ndarray, rotation: int = 0) -> PreparedFace:
    face = Face((100.0, 120.0, 260.0, 290.0), 0.9, landmarks, rotation)
    turned = rotate(image, rotation) if rotation else image
    chip = align_face(np.ascontiguousarray(turned), landmarks, ALIGNED.input_size)
    return PreparedFace(chip, face, measure(face, chip))


@pytest.mark.parametrize("rotation", [0, 90])
def test_an_aligned_face_reads_back_as_the_models_own_crop(rotation):
    image = photo()
    face = prepared(image, LANDMARKS, rotation)
    kept, kind = archive_view(image, face, ALIGNED)
    assert kind == "aligned" and kept.shape == (*ARCHIVE_SIZE, 3)
    again = model_input(encode(kept), kind, ALIGNED)
    assert again.shape == face.chip.shape
    assert np.abs(again.astype(int) - face.chip.astype(int)).mean() < 3  # two warps instead of one, no more


def test_a_photo_reads_back_exactly_through_the_models_box():
    image = photo(300)
    kept, kind = archive_view(image, None, CROPPED)
    assert kind == "photo"
    assert (model_input(encode(kept), kind, CROPPED) == crop_and_resize(image, CROPPED)).all()  # PNG: lossless


def test_large_photos_are_kept_at_a_bounded_size():
    kept, _ = archive_view(np.zeros((3000, 1500, 3), np.uint8), None, CROPPED)
    assert kept.shape == (1024, 512, 3)


def test_a_kind_the_new_model_cannot_read_is_refused_in_words():
    with pytest.raises(ModelError, match="archived aligned"):
        model_input(encode(np.zeros((*ARCHIVE_SIZE, 3), np.uint8)), "aligned", CROPPED)
    with pytest.raises(ModelError, match="detected again"):
        model_input(encode(np.zeros((50, 50, 3), np.uint8)), "photo", ALIGNED)
    assert decode(encode(np.full((4, 4, 3), 7, np.uint8))).max() == 7


def test_a_grey_picture_is_kept_as_one_channel_and_read_back_as_three() -> None:
    rng = np.random.default_rng(3)
    grey = rng.integers(0, 256, (40, 30), dtype=np.uint8)
    as_rgb = np.repeat(grey[..., None], 3, axis=2)
    colour = rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)
    assert (decode(encode(as_rgb)) == as_rgb).all()
    assert (decode(encode(colour)) == colour).all()
    assert len(encode(as_rgb)) < len(encode(colour)) / 2


def test_thumbnails_show_the_face():
    from PIL import Image as PILImage

    from embedder.archiving import thumbnail

    photo = np.zeros((200, 100, 3), np.uint8)
    photo[50:150, 25:75] = 255  # the "face" inside the crop box
    small = PILImage.open(io.BytesIO(thumbnail(encode(photo), "photo", (0.25, 0.25, 0.75, 0.75))))
    assert small.format == "JPEG" and small.size == (50, 100) and np.asarray(small).min() > 200  # never enlarged
    aligned = PILImage.open(io.BytesIO(thumbnail(encode(np.zeros((*ARCHIVE_SIZE, 3), np.uint8)), "aligned")))
    assert aligned.size == (112, 112)
