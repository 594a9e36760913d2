"""Face quality: the Laplacian variance by hand, the gate's reasons, and real faces made tiny or blurred."""

import numpy as np
import pytest
from PIL import Image, ImageFilter

from embedder.align import align_face
from embedder.detect import Face
from embedder.errors import ImageError
from embedder.quality import FaceQuality, QualityGate, measure, sharpness


def test_sharpness_is_the_variance_of_the_laplacian():
    assert sharpness(np.full((9, 9), 77, np.uint8)) == 0
    spot = np.zeros((5, 5), np.uint8)
    spot[2, 2] = 3
    # interior 3x3 Laplacian: -12 in the middle, 3 at its four neighbours, 0 at the corners
    values = np.array([0, 3, 0, 3, -12, 3, 0, 3, 0], np.float64)
    assert sharpness(spot) == pytest.approx(values.var())
    grey_rgb = np.repeat(spot[..., None], 3, axis=2)  # R = G = B: luma is the same value
    assert sharpness(grey_rgb) == pytest.approx(values.var())


def test_sharpness_refuses_odd_shapes():
    with pytest.raises(ImageError, match="3x3"):
        sharpness(np.zeros((2, 9), np.uint8))
    with pytest.raises(ImageError, match="image"):
        sharpness(np.zeros((9, 9, 4), np.uint8))


def test_measure_reads_size_eyes_and_score():
    landmarks = np.array([[10, 20], [40, 24], [25, 35], [12, 50], [38, 50]])
    face = Face((0, 5, 50, 65), 0.93, landmarks)
    quality = measure(face, np.zeros((112, 112, 3), np.uint8))
    assert quality == FaceQuality(face_px=50.0, eye_px=pytest.approx(np.hypot(30, 4)), score=pytest.approx(0.93),
                                  sharpness=0.0)


def test_the_gate_explains_each_failure():
    gate = QualityGate(min_face_px=32, min_score=0.8, min_sharpness=25)
    assert gate.reasons(FaceQuality(90, 40, 0.92, 150)) == []
    assert gate.passes(FaceQuality(90, 40, 0.92, 150))
    assert gate.reasons(FaceQuality(18.2, 8, 0.71, 3.04)) == [
        "face 18 px < 32 px", "detection score 0.71 < 0.80", "blurred: sharpness 3.0 < 25.0"]


def test_real_faces_pass_and_tiny_or_blurred_ones_do_not(yunet, lfw_image):
    gate = QualityGate()
    image = lfw_image("Serena_Williams")
    face = yunet.detect(image)[0]
    good = measure(face, align_face(image, face.landmarks, (112, 112)))
    assert gate.reasons(good) == []

    blurred = np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(4)))
    soft = measure(face, align_face(blurred, face.landmarks, (112, 112)))
    assert [r for r in gate.reasons(soft) if r.startswith("blurred")], soft

    canvas = np.full((240, 320, 3), 128, np.uint8)
    canvas[100:150, 100:150] = np.asarray(Image.fromarray(image).resize((50, 50), Image.Resampling.BILINEAR))
    tiny = yunet.detect(canvas)
    assert len(tiny) == 1 and tiny[0].width < 32, tiny  # YuNet still finds a face of about 20 px ...
    reasons = gate.reasons(measure(tiny[0], align_face(canvas, tiny[0].landmarks, (112, 112))))
    assert any(r.startswith("face ") and r.endswith("< 32 px") for r in reasons), reasons  # ... the gate refuses it
