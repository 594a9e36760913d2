"""The archived face (embedder/archiving.py): what a model reads back from it is what it read from the photo."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageFilter

from embedder.align import align_face
from embedder.archiving import ARCHIVE_SIZE, archive_view, decode, decode_with_face, encode, kept_face, model_input
from embedder.detect import Face, rotate
from embedder.errors import ImageError, ModelError
from embedder.faces import FacePolicy, NoFace, PreparedFace
from embedder.preprocess import crop_and_resize
from embedder.quality import QualityGate, measure
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
    with pytest.raises(ImageError, match="no face detector"):  # this face: another photo may carry its landmarks
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


class Found:
    """A detector that finds the faces it is given, wherever it looks, and counts its calls."""

    def __init__(self, *faces: Face) -> None:
        self.faces, self.calls = list(faces), 0

    def detect(self, image):
        self.calls += 1
        return list(self.faces)


OPEN = QualityGate(min_face_px=0, min_score=0, min_sharpness=0)
IN_BOX = Face((130.0, 150.0, 230.0, 260.0), 0.95, LANDMARKS - (0, 15))  # centre (180, 205): inside CROPPED's box
BYSTANDER = Face((0.0, 0.0, 60.0, 60.0), 0.99, LANDMARKS / 4)  # a background face, larger score, outside the box


def test_a_box_crop_photo_keeps_the_face_found_in_its_box_and_a_five_point_model_reads_it_without_detecting():
    image = photo(400)
    finder = Found(BYSTANDER, IN_BOX)
    data, kind = kept_face(image, None, CROPPED, FacePolicy(finder, OPEN))
    assert kind == "photo" and finder.calls == 1
    pixels, face = decode_with_face(data)
    assert (pixels == image).all() and np.allclose(face.landmarks, IN_BOX.landmarks, atol=0.01)
    assert (model_input(data, kind, CROPPED) == crop_and_resize(image, CROPPED)).all()  # the box model: as before
    direct = FacePolicy(finder, OPEN).judge(image, IN_BOX, ALIGNED).chip
    again = model_input(data, kind, ALIGNED, FacePolicy(None, OPEN))  # no detector needed any more
    assert finder.calls == 1 and np.abs(again.astype(int) - direct.astype(int)).max() <= 1


def test_a_photo_kept_without_its_face_is_detected_again_inside_the_old_models_box():
    image = photo(400)
    data, kind = kept_face(image, None, CROPPED)  # no detector when it was archived
    assert decode_with_face(data)[1] is None
    finder = Found(BYSTANDER, IN_BOX)
    chip = model_input(data, kind, ALIGNED, FacePolicy(finder, OPEN), CROPPED.crop_box)
    assert finder.calls == 1 and (chip == FacePolicy(finder, OPEN).judge(image, IN_BOX, ALIGNED).chip).all()
    with pytest.raises(NoFace, match="inside the crop box"):  # only the bystander: not guessed
        model_input(data, kind, ALIGNED, FacePolicy(Found(BYSTANDER), OPEN), CROPPED.crop_box)
    with pytest.raises(NoFace, match="quality gate .*face 100 px < 200 px"):  # judged as ingestion judges
        model_input(data, kind, ALIGNED, FacePolicy(finder, QualityGate(min_face_px=200)), CROPPED.crop_box)
    with pytest.raises(ImageError, match="no face detector is configured"):
        model_input(data, kind, ALIGNED, FacePolicy(None, OPEN), CROPPED.crop_box)
