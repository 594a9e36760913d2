"""Five-point face alignment: a similarity transform from detected landmarks to the ArcFace template, then a warp.

Recognition models trained on aligned crops (MobileFaceNet, the insightface family) expect the eyes, nose and mouth
at fixed places; putting them there is what alignment means. A similarity transform (rotation, uniform scale,
translation) keeps the face's proportions, so identity cues survive the warp.

Coordinates: the centre of pixel (row r, column c) is the point (x=c, y=r), as in the detector and the template.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from embedder.errors import ImageError

# ../shared/models/yunet/MODEL.md: (x, y) in a 112x112 crop, in the detector's landmark order (right eye and left
# eye of the image, nose tip, right and left mouth corners).
TEMPLATE_SIZE = 112
TEMPLATE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)
TEMPLATE_112.setflags(write=False)
_RESAMPLE = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
}


def template_for(size: tuple[int, int]) -> np.ndarray:
    """The template for an (height, width) crop: (5, 2) float64 points.

    Scaled by width / 112, so the face fills the crop's width as it fills the 112x112 one; a taller (or shorter)
    crop keeps the face vertically centred, with the extra rows (or the missing ones) split equally above and
    below. Scaling is of the continuous image (pixel edges stay at the crop's edges), so 112x112 gives the
    template itself and 224x224 puts each point at 2 (x + 0.5) - 0.5.
    """
    height, width = size
    if min(height, width) < 1:
        raise ImageError(f"alignment crop size must be positive, got {size}")
    scale = width / TEMPLATE_SIZE
    points = (TEMPLATE_112 + 0.5) * scale - 0.5
    points[:, 1] += (height - TEMPLATE_SIZE * scale) / 2
    return points


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The (2, 3) matrix M of the rotation, uniform scale and translation that maps src onto dst with the least
    squared error: dst ~ M @ [x, y, 1].

    Umeyama's closed form (IEEE PAMI 13(4), 1991): rotation from the SVD of the cross-covariance, with the sign of
    the last singular direction flipped when needed so the result is never a reflection; scale from the singular
    values over the source variance.
    """
    src = np.asarray(src, dtype=np.float64).reshape(-1, 2)
    dst = np.asarray(dst, dtype=np.float64).reshape(-1, 2)
    if src.shape != dst.shape or len(src) < 2:
        raise ImageError(f"need two matching sets of at least 2 points, got {src.shape} and {dst.shape}")
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    src_var = (src_c**2).sum() / len(src)
    if not np.isfinite(src_var) or src_var < 1e-12:
        raise ImageError("landmarks are degenerate (all at one point): no transform fits them")
    covariance = dst_c.T @ src_c / len(src)
    u, singular, vt = np.linalg.svd(covariance)
    signs = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        signs[-1] = -1.0
    rotation = u @ np.diag(signs) @ vt
    scale = (singular * signs).sum() / src_var
    matrix = np.empty((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = dst_mean - scale * rotation @ src_mean
    return matrix


def apply_transform(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(N, 2) points through a (2, 3) affine matrix."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return points @ matrix[:, :2].T + matrix[:, 2]


def align_face(
    image: np.ndarray,
    landmarks: np.ndarray,
    size: tuple[int, int],
    *,
    template: np.ndarray | None = None,
    interpolation: str = "bilinear",
) -> np.ndarray:
    """Warp the face with these (5, 2) landmarks (pixels of `image`, an (H, W, 3) uint8 array) to an (h, w, 3)
    uint8 crop with the landmarks on `template` (default: template_for(size)). Outside the image is black.

    PIL's affine transform wants the inverse map (output pixel -> input point) in its own convention, where
    pixel centres sit at +0.5; the offset is corrected here so that nothing shifts by half a pixel.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ImageError(f"alignment takes an (H, W, 3) uint8 image, got {image.shape} {image.dtype}")
    if interpolation not in _RESAMPLE:
        raise ImageError(f"interpolation must be one of {sorted(_RESAMPLE)}, got {interpolation!r}")
    height, width = size
    dst = template_for(size) if template is None else np.asarray(template, dtype=np.float64)
    forward = similarity_transform(landmarks, dst)
    source = Image.fromarray(np.ascontiguousarray(image))
    shrink = int(1.0 / np.sqrt(abs(np.linalg.det(forward[:, :2]))))
    if shrink >= 2:
        # an affine warp samples, it does not average: a face over twice the crop's size would alias, so
        # box-average it down by a whole factor first (PIL's reduce) and fit the transform again there
        source = source.reduce(shrink)
        landmarks = (np.asarray(landmarks, dtype=np.float64) + 0.5) / shrink - 0.5
        forward = similarity_transform(landmarks, dst)
    linear = np.linalg.inv(forward[:, :2])
    offset = -linear @ forward[:, 2]
    offset = offset + 0.5 - linear @ np.array([0.5, 0.5])  # both ends into PIL's pixel-centre-at-0.5 convention
    coefficients = (linear[0, 0], linear[0, 1], offset[0], linear[1, 0], linear[1, 1], offset[1])
    warped = source.transform(
        (width, height), Image.Transform.AFFINE, coefficients, resample=_RESAMPLE[interpolation]
    )
    return np.asarray(warped, dtype=np.uint8)
