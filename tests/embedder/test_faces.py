"""The face policy: selection rules and the rotation fallback with a scripted detector, then with YuNet on LFW
faces pasted onto a canvas, blank images and a photo lying on its side."""

import io

import numpy as np
import pytest
from PIL import Image

from common.errors import BadInput
from embedder.align import TEMPLATE_112
from embedder.detect import Face
from embedder.errors import ImageError, ModelError
from embedder.faces import FacePolicy, NoFace, TooManyFaces, check_named
from embedder.preprocess import decode_image, load_rgb
from embedder.quality import QualityGate
from embedder.spec import ModelSpec

ALIGNED = ModelSpec("MobileFaceNet", 128, (112, 112), alignment="five_point")
CROPPED = ModelSpec("MobileFaceNet", 128, (112, 112), crop_box=(0.22, 0.18, 0.78, 0.74))
NO_GATE = QualityGate(min_face_px=0, min_score=0, min_sharpness=0)


def face_at(x: float, y: float, size: float, score: float = 0.9) -> Face:
    """A face whose landmarks are the template's, scaled to `size` px and put at (x, y)."""
    return Face((x, y, x + size, y + size), score, TEMPLATE_112 * (size / 112) + (x, y))


class Scripted:
    """A detector that answers from a script: faces per turn of the image, recognised by its shape and corner."""

    def __init__(self, faces_by_marker: dict[int, list[Face]]) -> None:
        self.faces_by_marker = faces_by_marker
        self.calls = 0

    def detect(self, image):
        self.calls += 1
        return list(self.faces_by_marker.get(int(image[0, 0, 0]), []))


def marked(height: int, width: int) -> np.ndarray:
    """Noise with a distinct value in each corner, so the scripted detector knows how the image was turned."""
    image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    image[0, 0], image[0, -1], image[-1, -1], image[-1, 0] = 1, 2, 3, 4
    return image


def test_selection_rules():
    three = [face_at(10, 10, 60, 0.95), face_at(100, 10, 90, 0.9), face_at(200, 10, 40, 0.85)]
    image = marked(200, 300)
    with pytest.raises(TooManyFaces, match="3 faces"):
        FacePolicy(Scripted({1: three}), NO_GATE, select="one").prepare(image, ALIGNED)
    largest = FacePolicy(Scripted({1: three}), NO_GATE, select="largest").prepare(image, ALIGNED)
    assert [p.face for p in largest] == [three[1]]
    everyone = FacePolicy(Scripted({1: three}), NO_GATE, select="all").prepare(image, ALIGNED)
    assert [p.face for p in everyone] == three and all(p.chip.shape == (112, 112, 3) for p in everyone)
    capped = FacePolicy(Scripted({1: three}), NO_GATE, select="all", max_faces=2).prepare(image, ALIGNED)
    assert len(capped) == 2


def test_one_means_one_face_that_passes_the_gate():
    faces = [face_at(10, 10, 100), face_at(150, 10, 20)]  # a bystander of 20 px does not count
    gate = QualityGate(min_face_px=32, min_score=0.5, min_sharpness=0)
    [only] = FacePolicy(Scripted({1: faces}), gate).prepare(marked(200, 300), ALIGNED)
    assert only.face is faces[0] and only.passed
    examined = FacePolicy(Scripted({1: faces}), gate).examine(marked(200, 300), ALIGNED)
    assert examined[1].reasons == ("face 20 px < 32 px",)


def test_no_acceptable_face_says_why():
    image = marked(200, 300)
    with pytest.raises(NoFace, match="no face found"):
        FacePolicy(Scripted({}), rotations=()).prepare(image, ALIGNED)
    gate = QualityGate(min_face_px=32, min_score=0.5, min_sharpness=0)
    with pytest.raises(NoFace, match=r"no face passes the quality gate \(1 face found: face 20 px < 32 px\)"):
        FacePolicy(Scripted({1: [face_at(10, 10, 20)]}), gate, rotations=()).prepare(image, ALIGNED)


def test_the_rotation_fallback_picks_the_best_scoring_turn():
    image = marked(200, 300)
    # turned 90 ccw, the top-left corner holds what was the top-right (2); 180: 3; 270: 4
    detector = Scripted({2: [face_at(10, 10, 80, 0.8)], 4: [face_at(10, 10, 80, 0.93)]})
    [found] = FacePolicy(detector, NO_GATE).prepare(image, ALIGNED)
    assert found.face.rotation == 270 and found.face.score == pytest.approx(0.93)
    assert detector.calls == 4  # as it is, then each of the three turns
    with pytest.raises(NoFace):
        FacePolicy(detector, NO_GATE, rotations=()).prepare(image, ALIGNED)


def test_the_policy_checks_its_settings():
    with pytest.raises(ModelError, match="selection"):
        FacePolicy(select="first")
    with pytest.raises(ModelError, match="rotations"):
        FacePolicy(rotations=(45,))
    with pytest.raises(ModelError, match="needs a face detector"):
        FacePolicy().prepare(marked(50, 50), ALIGNED)
    with pytest.raises(ImageError, match="uint8"):
        FacePolicy().prepare(np.zeros((50, 50)), CROPPED)


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "PNG")
    return buffer.getvalue()


def test_alignment_none_is_todays_decode_as_one_pseudo_face():
    image = marked(250, 250)
    [whole] = FacePolicy().prepare_bytes(png(image), CROPPED)  # no detector needed, nothing gated
    np.testing.assert_array_equal(whole.chip, decode_image(png(image), CROPPED))
    assert whole.face.box == (55.0, 45.0, 195.0, 185.0) and whole.face.score == 1.0 and whole.passed
    assert ((whole.face.landmarks >= (55, 45)) & (whole.face.landmarks <= (195, 185))).all()


def test_load_rgb_keeps_full_resolution_and_decode_refuses_aligned_specs():
    image = marked(300, 500)
    np.testing.assert_array_equal(load_rgb(png(image)), image)
    with pytest.raises(ModelError, match="FacePolicy"):
        decode_image(png(image), ALIGNED)


# ---- with YuNet and LFW-gray from ../shared ----

def lfw_face(lfw_image, name: str, size: int) -> np.ndarray:
    """The face region of an LFW-gray image (MODEL.md's box), scaled to size x size."""
    crop = Image.fromarray(lfw_image(name)).crop((55, 45, 195, 185))
    return np.asarray(crop.resize((size, size), Image.Resampling.BICUBIC))


@pytest.fixture(scope="module")
def group_photo(lfw_image) -> np.ndarray:
    canvas = np.full((400, 900, 3), 128, np.uint8)
    for (name, size), x in zip([("Aaron_Eckhart", 150), ("Serena_Williams", 210), ("Tony_Blair", 170)],
                               (40, 330, 660), strict=True):
        canvas[100 : 100 + size, x : x + size] = lfw_face(lfw_image, name, size)
    return canvas


def test_a_group_photo(yunet, group_photo):
    with pytest.raises(TooManyFaces, match="3 faces"):
        FacePolicy(yunet, select="one").prepare(group_photo, ALIGNED)
    [largest] = FacePolicy(yunet, select="largest").prepare(group_photo, ALIGNED)
    assert 330 < (largest.face.box[0] + largest.face.box[2]) / 2 < 540  # Serena Williams's, pasted at 210 px
    everyone = FacePolicy(yunet, select="all").prepare(group_photo, ALIGNED)
    assert len(everyone) == 3 and all(p.passed and p.chip.shape == (112, 112, 3) for p in everyone)
    centres = sorted((p.face.box[0] + p.face.box[2]) / 2 for p in everyone)
    assert 40 < centres[0] < 190 and 330 < centres[1] < 540 and 660 < centres[2] < 830  # one in each pasted face


@pytest.mark.parametrize("kind", ["blank", "noise"])
def test_no_face_in_a_blank_or_noisy_image(yunet, kind):
    rng = np.random.default_rng(3)
    image = np.full((300, 400, 3), 200, np.uint8) if kind == "blank" else rng.integers(0, 256, (300, 400, 3), np.uint8)
    with pytest.raises(NoFace, match="no face"):
        FacePolicy(yunet).prepare(image, ALIGNED)


def test_a_photo_too_small_for_a_face_says_so(yunet, lfw_image):
    tiny = np.asarray(Image.fromarray(lfw_image("Colin_Powell")).resize((20, 20)))
    with pytest.raises(NoFace, match=r"^no face found in the image \(it is 20x20 pixels: a face needs 32 or more"):
        FacePolicy(yunet).prepare(tiny, ALIGNED)


def test_a_photo_on_its_side_is_found_turned_back(yunet, lfw_image):
    upright = lfw_image("Colin_Powell")
    [expected] = FacePolicy(yunet, rotations=()).prepare(upright, ALIGNED)
    sideways = np.ascontiguousarray(np.rot90(upright))  # as a scanner without EXIF would deliver it
    [found] = FacePolicy(yunet).prepare(sideways, ALIGNED)
    assert found.face.rotation == 270  # turning the sideways photo 270 degrees ccw stands it upright
    np.testing.assert_allclose(found.face.landmarks, expected.face.landmarks, atol=1.0)
    assert np.abs(found.chip.astype(int) - expected.chip).mean() < 3
    with pytest.raises(NoFace):
        FacePolicy(yunet, rotations=()).prepare(sideways, ALIGNED)


def test_every_face_of_a_photo_is_never_filed_under_one_name():
    for select in (None, "one", "largest"):
        check_named(select)
    with pytest.raises(BadInput, match="'all'.* only for faces nobody has named"):
        check_named("all")
