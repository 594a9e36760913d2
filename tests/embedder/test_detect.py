"""Face detection: YuNet's output decoding and NMS by hand, the factory's errors, and the real files on LFW."""

import numpy as np
import pytest
from PIL import Image

from embedder.detect import STRIDES, Face, YuNetDetector, decode_yunet, nms, open_detector, rotate
from embedder.errors import ImageError, ModelError

YUNET_FILES = ["face_detection_yunet_2026may.onnx", "yunet_n_dynamic.onnx", "face_detection_yunet_2023mar.onnx"]
LFW_PEOPLE = ["Aaron_Eckhart", "George_W_Bush", "Serena_Williams", "Tony_Blair"]


def empty_outputs(height: int, width: int) -> dict[str, np.ndarray]:
    out = {}
    for s in STRIDES:
        cells = (height // s) * (width // s)
        out |= {f"cls_{s}": np.zeros((1, cells, 1), np.float32), f"obj_{s}": np.zeros((1, cells, 1), np.float32),
                f"bbox_{s}": np.zeros((1, cells, 4), np.float32), f"kps_{s}": np.zeros((1, cells, 10), np.float32)}
    return out


def test_decoding_follows_the_model_card():
    outputs = empty_outputs(64, 64)
    cell = 1 * 4 + 2  # stride 16 on a 64x64 input: a 4x4 grid; row 1, column 2
    outputs["cls_16"][0, cell] = 0.81
    outputs["obj_16"][0, cell] = 1.5  # clipped to 1: score sqrt(0.81 * 1) = 0.9
    outputs["bbox_16"][0, cell] = [0.5, 0.25, np.log(2), np.log(3)]
    outputs["kps_16"][0, cell] = np.arange(10) / 10
    outputs["cls_8"][0, 5] = outputs["obj_8"][0, 5] = 0.5  # score 0.5: under the threshold
    boxes, scores, points = decode_yunet(outputs, 64, 64, score_threshold=0.6, top_k=10)
    np.testing.assert_allclose(scores, [0.9], rtol=1e-6)
    np.testing.assert_allclose(boxes, [[40 - 16, 20 - 24, 40 + 16, 20 + 24]], rtol=1e-6)  # centre (40, 20), 32x48
    expected = (np.array([2.0, 1.0]) + (np.arange(10) / 10).reshape(5, 2)) * 16
    np.testing.assert_allclose(points[0], expected, rtol=1e-6)


def test_decoding_checks_the_grid():
    with pytest.raises(ModelError, match="cells at stride 8"):
        decode_yunet(empty_outputs(64, 64), 64, 96, score_threshold=0.5, top_k=10)


def test_nms_keeps_the_best_of_each_overlapping_group():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 9]], np.float32)
    scores = np.array([0.8, 0.9, 0.7, 0.95], np.float32)
    # box 3 overlaps 0 (IoU 0.9) and 1 (IoU 0.68); box 2 stands alone
    np.testing.assert_array_equal(nms(boxes, scores, 0.3), [3, 2])
    np.testing.assert_array_equal(nms(boxes, scores, 0.95), [3, 1, 0, 2])


def test_a_face_is_frozen_and_checked():
    face = Face((1, 2, 30, 40), 0.9, np.arange(10))
    assert face.landmarks.shape == (5, 2) and face.landmarks.dtype == np.float32
    assert (face.width, face.height, face.area) == (29.0, 38.0, 29.0 * 38.0)
    with pytest.raises(ValueError):
        face.landmarks[0, 0] = 5
    with pytest.raises(ImageError, match="rotation"):
        Face((0, 0, 1, 1), 0.9, np.zeros(10), rotation=45)


def test_rotate_turns_counter_clockwise():
    image = np.arange(6).reshape(2, 3)
    np.testing.assert_array_equal(rotate(image, 90), np.rot90(image))
    np.testing.assert_array_equal(rotate(rotate(image, 90), 270), image)


def test_open_detector_by_configuration_value(tmp_path):
    assert open_detector(None) is None and open_detector("") is None
    with pytest.raises(ModelError, match="does not exist"):
        open_detector(tmp_path / "missing.onnx")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    with pytest.raises(ModelError, match="cannot load"):
        open_detector(garbage)
    with pytest.raises(ModelError, match="expected a YuNet .onnx"):
        open_detector(tmp_path / "yunet.tflite")
    with pytest.raises(ModelError, match="unknown face detector options \\['score_treshold'\\]"):
        open_detector(garbage, score_treshold=0.5)


def test_an_embedding_model_is_not_a_detector(shared_models):
    with pytest.raises(ModelError, match="not a YuNet detector"):
        YuNetDetector(shared_models / "mobilefacenet" / "MobileFaceNet.onnx")


@pytest.mark.parametrize("filename", YUNET_FILES)
def test_yunet_finds_the_one_face_of_lfw_images(shared_models, lfw_image, filename):
    detector = open_detector(shared_models / "yunet" / filename, threads=1)
    for name in LFW_PEOPLE:
        faces = detector.detect(lfw_image(name))
        assert len(faces) == 1, f"{name}: {faces}"
        face = faces[0]
        x1, y1, x2, y2 = face.box
        assert 60 < face.width < 150 and face.score > 0.8 and face.rotation == 0
        assert ((face.landmarks >= (x1, y1)) & (face.landmarks <= (x2, y2))).all(), f"{name}: landmarks outside"
        right_eye, left_eye, nose, mouth_right, mouth_left = face.landmarks
        assert right_eye[0] < left_eye[0] and mouth_right[0] < mouth_left[0]
        assert max(right_eye[1], left_eye[1]) < nose[1] < min(mouth_right[1], mouth_left[1])


def test_a_large_photo_is_shrunk_and_mapped_back(yunet, lfw_image):
    """A 640 px photo blown up 4x is shrunk back to 640 px for the network: the same face, at 4x the coordinates."""
    photo = np.full((640, 640, 3), 100, np.uint8)
    photo[200:450, 300:550] = lfw_image("George_W_Bush")
    big = np.asarray(Image.fromarray(photo).resize((2560, 2560), Image.Resampling.BICUBIC))
    face, big_face = yunet.detect(photo)[0], yunet.detect(big)[0]
    np.testing.assert_allclose(big_face.landmarks, (face.landmarks + 0.5) * 4 - 0.5, atol=4)  # 1 px at 640
    np.testing.assert_allclose(big_face.box, (np.array(face.box) + 0.5) * 4 - 0.5, atol=4)
    assert abs(big_face.score - face.score) < 0.02


def test_a_face_on_a_panorama_is_found_where_shrinking_the_long_side_would_lose_it(yunet, lfw_image):
    """A 250 px face on a 8000x250 strip: its long side shrunk to 640 would leave a face of 20 px; the short side
    is kept at half of 640 or more instead. An ordinary photo is shrunk as before."""
    strip = np.full((250, 8000, 3), 128, np.uint8)
    strip[:, 5000:5250] = lfw_image("George_W_Bush")
    [face] = yunet.detect(strip)
    assert 5000 <= face.box[0] < face.box[2] <= 5250 and face.score > 0.8
    assert yunet._scale_for(3000, 4000) == 640 / 4000 and yunet._scale_for(1000, 30000) == 320 / 1000


def test_the_detector_wants_rgb_uint8(yunet):
    with pytest.raises(ImageError, match="uint8"):
        yunet.detect(np.zeros((64, 64), np.uint8))
