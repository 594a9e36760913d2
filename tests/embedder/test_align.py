"""Five-point alignment: the similarity fit against hand-made transforms and a plain least-squares solve, the warp
against dots drawn at known places, and a real LFW face."""

import numpy as np
import pytest

from embedder.align import TEMPLATE_112, align_face, apply_transform, similarity_transform, template_for
from embedder.errors import ImageError


def similarity(angle: float, scale: float, shift: tuple[float, float]) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[scale * c, -scale * s, shift[0]], [scale * s, scale * c, shift[1]]])


def test_the_template_maps_to_itself():
    np.testing.assert_allclose(similarity_transform(TEMPLATE_112, TEMPLATE_112), np.eye(2, 3), atol=1e-12)


def test_template_for_scales_by_width_and_centres_vertically():
    np.testing.assert_array_equal(template_for((112, 112)), TEMPLATE_112)
    np.testing.assert_allclose(template_for((224, 224)), (TEMPLATE_112 + 0.5) * 2 - 0.5)
    tall = template_for((128, 112))
    np.testing.assert_allclose(tall[:, 0], TEMPLATE_112[:, 0])
    np.testing.assert_allclose(tall[:, 1], TEMPLATE_112[:, 1] + 8)  # 16 extra rows, half above
    wide = template_for((112, 224))  # scaled by width: taller than the crop, so centred by cutting equally
    np.testing.assert_allclose(wide[:, 1], (TEMPLATE_112[:, 1] + 0.5) * 2 - 0.5 - 56)


@pytest.mark.parametrize("angle, scale, shift", [
    (0.3, 2.5, (40.0, -7.0)),
    (-2.0, 0.4, (3.0, 90.0)),
    (np.pi, 1.0, (0.0, 0.0)),  # a half turn: the SVD's two singular values are equal, no sign to guess
])
def test_a_known_similarity_is_recovered_exactly(angle, scale, shift):
    truth = similarity(angle, scale, shift)
    src = TEMPLATE_112 * 3 + 17
    dst = apply_transform(truth, src)
    np.testing.assert_allclose(similarity_transform(src, dst), truth, atol=1e-9)


def test_noisy_points_give_the_least_squares_similarity():
    """dst ~ [[a, -b], [b, a]] p + t is linear in (a, b, tx, ty): numpy's lstsq solves it independently."""
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 200, size=(5, 2))
    dst = apply_transform(similarity(0.7, 1.3, (5, 9)), src) + rng.normal(0, 2.0, size=(5, 2))
    x, y = src.T
    rows = np.concatenate([np.stack([x, -y, np.ones(5), np.zeros(5)], 1), np.stack([y, x, np.zeros(5), np.ones(5)], 1)])
    (a, b, tx, ty), *_ = np.linalg.lstsq(rows, np.concatenate([dst[:, 0], dst[:, 1]]), rcond=None)
    np.testing.assert_allclose(similarity_transform(src, dst), [[a, -b, tx], [b, a, ty]], atol=1e-9)


def test_a_mirrored_face_gives_a_rotation_never_a_reflection():
    mirrored = TEMPLATE_112 * [-1, 1] + [112, 0]
    matrix = similarity_transform(mirrored, TEMPLATE_112)
    assert np.linalg.det(matrix[:, :2]) > 0


def test_degenerate_landmarks_are_refused():
    with pytest.raises(ImageError, match="degenerate"):
        similarity_transform(np.ones((5, 2)), TEMPLATE_112)


def dots_at(points: np.ndarray, shape: tuple[int, int], radius: int) -> np.ndarray:
    image = np.zeros((*shape, 3), np.uint8)
    for x, y in np.round(points).astype(int):
        image[y - radius : y + radius + 1, x - radius : x + radius + 1] = 255
    return image


def centroids(chip: np.ndarray, near: np.ndarray, window: int = 6) -> np.ndarray:
    grey = chip[..., 0].astype(np.float64)
    out = []
    for x, y in np.round(near).astype(int):
        patch = grey[y - window : y + window + 1, x - window : x + window + 1]
        ys, xs = np.mgrid[y - window : y + window + 1, x - window : x + window + 1]
        out.append([(patch * xs).sum() / patch.sum(), (patch * ys).sum() / patch.sum()])
    return np.array(out)


@pytest.mark.parametrize("scale, radius", [(1.7, 2), (5.0, 7)])  # 5x: the box-average shrink before the warp
def test_the_warp_puts_each_landmark_on_the_template(scale, radius):
    truth = similarity(0.4, scale, (60.0, 20.0))
    landmarks = np.round(apply_transform(truth, TEMPLATE_112))  # dots sit on whole pixels
    image = dots_at(landmarks, (int(landmarks[:, 1].max()) + 60, int(landmarks[:, 0].max()) + 60), radius)
    chip = align_face(image, landmarks, (112, 112))
    assert chip.shape == (112, 112, 3) and chip.dtype == np.uint8
    expected = apply_transform(similarity_transform(landmarks, TEMPLATE_112), landmarks)  # rounding moved them
    np.testing.assert_allclose(expected, TEMPLATE_112, atol=0.5)
    np.testing.assert_allclose(centroids(chip, expected), expected, atol=0.1)  # half a pixel off would show


def test_align_refuses_what_is_not_an_rgb_image():
    with pytest.raises(ImageError, match="uint8"):
        align_face(np.zeros((50, 50), np.uint8), TEMPLATE_112, (112, 112))


def test_a_real_face_has_its_eyes_on_the_template(yunet, lfw_image):
    """Detected again in the aligned crop (with a margin around the face so the detector sees all of it), the
    eyes are where the template puts them, to within YuNet's own landmark noise (about 0.1 eye distance)."""
    for name in ("Aaron_Eckhart", "Serena_Williams", "Colin_Powell"):
        image = lfw_image(name)
        face = yunet.detect(image)[0]
        fitted = apply_transform(similarity_transform(face.landmarks, TEMPLATE_112), face.landmarks)
        assert np.abs(fitted - TEMPLATE_112).max() < 6  # a face is close to the template's shape

        with_margin = TEMPLATE_112 + 56
        again = yunet.detect(align_face(image, face.landmarks, (224, 224), template=with_margin))
        assert len(again) == 1
        eye_distance = np.linalg.norm(with_margin[1] - with_margin[0])
        assert np.linalg.norm(again[0].landmarks[:2] - with_margin[:2], axis=1).max() < 0.2 * eye_distance
