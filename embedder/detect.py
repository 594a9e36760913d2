"""Find faces and their five landmarks in a full-resolution photo, with YuNet through onnxruntime.

A `Detector` is anything with `detect(rgb) -> list[Face]`; `YuNetDetector` is the one we ship. The network sees the
photo shrunk so its long side is at most `max_side` (YuNet is trained for faces of roughly 10 to 300 px, and a
12-megapixel photo would cost a second), padded with zeros at the bottom/right to a multiple of 32; boxes and
landmarks are mapped back to the full image, so the aligner cuts the face from the sharpest pixels there are.

Coordinates follow the usual array convention: the centre of pixel (row r, column c) is the point (x=c, y=r).
See ../shared/models/yunet/MODEL.md for the input format and the output decoding implemented here.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

from embedder.errors import ImageError, ModelError

STRIDES = (8, 16, 32)
ROTATIONS = (0, 90, 180, 270)


@dataclass(frozen=True, eq=False)
class Face:
    """One detected face.

    `box` is (x1, y1, x2, y2) and `landmarks` the (5, 2) float32 points (right eye, left eye of the image, i.e. the
    first has the smaller x; nose tip; the two mouth corners in the same order), both in pixels of the image the
    face was found in: the input photo turned `rotation` degrees counter-clockwise (`rotate(photo, rotation)`).
    Compared by identity (it holds an array); the landmarks array is read-only like the rest.
    """

    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray = field(repr=False)
    rotation: int = 0

    def __post_init__(self) -> None:
        points = np.array(self.landmarks, dtype=np.float32).reshape(5, 2)
        points.setflags(write=False)
        object.__setattr__(self, "landmarks", points)
        object.__setattr__(self, "box", tuple(float(v) for v in self.box))
        if self.rotation not in ROTATIONS:
            raise ImageError(f"rotation must be one of {ROTATIONS} degrees, got {self.rotation}")

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)


class Detector(Protocol):
    """What the face policy needs from a detector; tests pass in fakes."""

    def detect(self, image: np.ndarray) -> list[Face]:
        """(H, W, 3) uint8 RGB -> faces sorted by score, highest first, in that image's coordinates."""
        ...


def rotate(image: np.ndarray, rotation: int) -> np.ndarray:
    """The image turned `rotation` degrees counter-clockwise (a multiple of 90), as np.rot90 turns it."""
    if rotation not in ROTATIONS:
        raise ImageError(f"rotation must be one of {ROTATIONS} degrees, got {rotation}")
    return np.rot90(image, k=rotation // 90)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Greedy non-maximum suppression: indices of the kept boxes, highest score first."""
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = boxes.T
    areas = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    keep = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(best)
        w = np.maximum(np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]), 0)
        h = np.maximum(np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]), 0)
        inter = w * h
        overlap = inter / np.maximum(areas[best] + areas[rest] - inter, 1e-9)
        order = rest[overlap <= iou]
    return np.asarray(keep, dtype=np.int64)


def decode_yunet(
    outputs: dict[str, np.ndarray], height: int, width: int, *, score_threshold: float, top_k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """YuNet's per-stride outputs for a (height, width) input -> (boxes (N, 4), scores (N,), landmarks (N, 5, 2))
    above the threshold, at most top_k of them (best first), before NMS. The formulas are MODEL.md's."""
    boxes, scores, points = [], [], []
    for stride in STRIDES:
        rows, cols = height // stride, width // stride
        cls = outputs[f"cls_{stride}"].reshape(-1)
        obj = outputs[f"obj_{stride}"].reshape(-1)
        if cls.size != rows * cols:
            raise ModelError(f"YuNet gave {cls.size} cells at stride {stride} for a {height}x{width} input, "
                             f"expected {rows * cols}")
        score = np.sqrt(np.clip(cls, 0, 1) * np.clip(obj, 0, 1))
        hit = np.flatnonzero(score >= score_threshold)
        if hit.size == 0:
            continue
        bbox = outputs[f"bbox_{stride}"].reshape(-1, 4)[hit]
        kps = outputs[f"kps_{stride}"].reshape(-1, 5, 2)[hit]
        cell = np.stack([hit % cols, hit // cols], axis=1).astype(np.float32)  # (column, row)
        centre = (cell + bbox[:, :2]) * stride
        size = np.exp(bbox[:, 2:]) * stride
        boxes.append(np.concatenate([centre - size / 2, centre + size / 2], axis=1))
        scores.append(score[hit])
        points.append((cell[:, None, :] + kps) * stride)
    if not boxes:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32)
    boxes_a, scores_a, points_a = np.concatenate(boxes), np.concatenate(scores), np.concatenate(points)
    best = np.argsort(-scores_a, kind="stable")[:top_k]
    return boxes_a[best], scores_a[best], points_a[best]


class YuNetDetector:
    """YuNet (OpenCV Zoo's or libfacedetection.train's ONNX export) on onnxruntime's CPU provider.

    The network is tiny and every photo has its own input shape, so the CPU is the right place: a GPU provider
    would spend more on copies and per-shape planning than on the convolutions. `threads` is onnxruntime's
    intra-op threads (default: one per core); a decode task sharing the machine should ask for one.
    A fixed-size export (the 2023mar file, 640x640) gets every photo shrunk to fit and padded to its size.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        score_threshold: float = 0.7,
        nms_iou: float = 0.3,
        max_side: int = 640,
        top_k: int = 5000,
        threads: int | None = None,
    ) -> None:
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise ModelError(f"face detector model {path} does not exist")
        if not 0 < score_threshold <= 1 or not 0 < nms_iou <= 1:
            raise ModelError(f"score_threshold and nms_iou must lie in (0, 1], got {score_threshold}, {nms_iou}")
        if max_side < 32 or top_k < 1:
            raise ModelError(f"max_side must be at least 32 px and top_k at least 1, got {max_side}, {top_k}")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped errors for invalid files
            raise ModelError(f"onnxruntime cannot load the face detector {path}: {exc}") from exc
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise ModelError(f"{path} must take one NCHW image input, it takes {[i.shape for i in inputs]}")
        wanted = {f"{kind}_{s}" for kind in ("cls", "obj", "bbox", "kps") for s in STRIDES}
        names = {o.name for o in self.session.get_outputs()}
        if not wanted <= names:
            raise ModelError(f"{path} is not a YuNet detector: outputs {sorted(wanted - names)} are missing")
        self.path = path
        self.input_name = inputs[0].name
        self.output_names = sorted(wanted)
        height, width = inputs[0].shape[2:]
        self.fixed_size = (height, width) if isinstance(height, int) and isinstance(width, int) else None
        if self.fixed_size and min(self.fixed_size) % 32:
            raise ModelError(f"{path} takes {height}x{width} inputs, not a multiple of 32")
        self.score_threshold = score_threshold
        self.nms_iou = nms_iou
        self.max_side = max_side
        self.top_k = top_k
        self._options = {"score_threshold": score_threshold, "nms_iou": nms_iou, "max_side": max_side,
                         "top_k": top_k, "threads": threads}

    def __reduce__(self):
        """Pickled as its path and options, rebuilt once per process: Ray ships a policy to every decode task,
        and an onnxruntime session can neither be pickled nor is worth loading per task."""
        return _cached_detector, (str(self.path), tuple(sorted(self._options.items())))

    def _scale_for(self, height: int, width: int) -> float:
        """The long side shrunk to max_side, unless that leaves the short side under half of it (a panorama, a
        strip of booth photos): then the short side is shrunk to that half instead, the long side going past
        max_side. A QA pass lost a 250-pixel face on a 4000x250 panorama, shrunk to 640x40. Never enlarged."""
        scale = min(1.0, self.max_side / max(height, width))
        if min(height, width) * scale < self.max_side / 2:
            scale = min(1.0, self.max_side / 2 / min(height, width))
        if self.fixed_size:
            scale = min(scale, self.fixed_size[0] / height, self.fixed_size[1] / width)
        return scale

    def detect(self, image: np.ndarray) -> list[Face]:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ImageError(f"the detector takes an (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}")
        height, width = image.shape[:2]
        scale = self._scale_for(height, width)
        small = image
        if scale < 1.0:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            small = np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize(size, Image.Resampling.BILINEAR))
        sh, sw = small.shape[:2]
        ph, pw = self.fixed_size or (-(-sh // 32) * 32, -(-sw // 32) * 32)
        x = np.zeros((1, 3, ph, pw), np.float32)
        x[0, :, :sh, :sw] = small[..., ::-1].transpose(2, 0, 1)  # RGB -> BGR, 0..255, no normalisation
        values = self.session.run(self.output_names, {self.input_name: x})
        boxes, scores, points = decode_yunet(dict(zip(self.output_names, values, strict=True)), ph, pw,
                                             score_threshold=self.score_threshold, top_k=self.top_k)
        keep = nms(boxes, scores, self.nms_iou)
        # back to the full image: the resize maps pixel centres, x_full + 0.5 = (x_small + 0.5) * (W / w)
        fx, fy = width / sw, height / sh
        faces = []
        for i in keep:
            x1, y1, x2, y2 = (boxes[i] + 0.5) * (fx, fy, fx, fy) - 0.5
            box = (max(x1, 0.0), max(y1, 0.0), min(x2, float(width)), min(y2, float(height)))
            faces.append(Face(box, float(scores[i]), (points[i] + 0.5) * (fx, fy) - 0.5))
        return faces


_DETECTORS: dict[tuple, YuNetDetector] = {}


def _cached_detector(path: str, options: tuple) -> YuNetDetector:
    key = (path, options)
    if key not in _DETECTORS:
        _DETECTORS[key] = YuNetDetector(path, **dict(options))
    return _DETECTORS[key]


def open_detector(path: str | Path | None, **options) -> Detector | None:
    """The detector a configuration value names: None or "" for none (specs aligned by crop box only), or the
    path of a YuNet .onnx file (../shared/models/yunet/face_detection_yunet_2026may.onnx is the documented
    default). `options` are YuNetDetector's keywords; a misspelt one is an error, not silently ignored."""
    if path is None or str(path) == "":
        return None
    path = Path(path)
    known = set(inspect.signature(YuNetDetector.__init__).parameters) - {"self", "path"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ModelError(f"unknown face detector options {unknown}; known: {sorted(known)}")
    if path.suffix.lower() != ".onnx":
        raise ModelError(f"face detector {path}: expected a YuNet .onnx file")
    return YuNetDetector(path, **options)
