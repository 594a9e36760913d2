"""Is a detected face good enough to embed? Size, detector confidence and sharpness, and a gate that says why not.

A face of 15 pixels or a motion-blurred one still gives a vector, and that vector matches strangers: enrolling it
poisons a gallery, searching with it returns confident nonsense. The gate turns such faces away with a reason a
person can act on ("face 18 px < 32 px").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from embedder.detect import Face
from embedder.errors import ImageError

_GREY = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601 luma, what PIL's convert("L") uses


@dataclass(frozen=True)
class FaceQuality:
    """face_px: the box's shorter side and eye_px: the distance between the two eye landmarks, both in pixels
    of the full-resolution image; score: the detector's confidence (0..1); sharpness: variance of the Laplacian
    of the grey aligned crop (higher is sharper; it depends on the crop size, so compare crops of one size)."""

    face_px: float
    eye_px: float
    score: float
    sharpness: float


def sharpness(chip: np.ndarray) -> float:
    """Variance of the 3x3 Laplacian (4-neighbour) over the interior of the grey image: blur removes the high
    frequencies the Laplacian responds to, so its variance falls (Pech-Pacheco et al., ICPR 2000)."""
    if chip.ndim == 3:
        if chip.shape[2] != 3:
            raise ImageError(f"sharpness takes an (H, W) or (H, W, 3) image, got {chip.shape}")
        grey = chip.astype(np.float64) @ _GREY
    elif chip.ndim == 2:
        grey = chip.astype(np.float64)
    else:
        raise ImageError(f"sharpness takes an (H, W) or (H, W, 3) image, got {chip.shape}")
    if min(grey.shape) < 3:
        raise ImageError(f"sharpness needs at least 3x3 pixels, got {grey.shape}")
    laplacian = (grey[:-2, 1:-1] + grey[2:, 1:-1] + grey[1:-1, :-2] + grey[1:-1, 2:]) - 4 * grey[1:-1, 1:-1]
    return float(laplacian.var())


def measure(face: Face, chip: np.ndarray) -> FaceQuality:
    """The quality of one detected face, from its detection and its aligned crop."""
    right_eye, left_eye = face.landmarks[0], face.landmarks[1]
    return FaceQuality(
        face_px=float(min(face.width, face.height)),
        eye_px=float(np.linalg.norm(left_eye - right_eye)),
        score=float(face.score),
        sharpness=sharpness(chip),
    )


@dataclass(frozen=True)
class QualityGate:
    """Thresholds a face must meet to be embedded; `reasons` lists each one it misses (empty: it passes).

    Defaults, measured on all 13,233 LFW-gray images (250x250, one face each; YuNet 2026may at score 0.7 found
    every one) with 112x112 crops aligned to the template; bench/detect_lfw.py prints the same pass rate:
    - min_face_px 32: LFW boxes' shorter sides run from 41 to 173 px (1st percentile 83), so none is near it.
      Below about 32 px the eyes are under 15 px apart and a 112 px crop is mostly interpolation: YuNet detects
      faces from about 10 px, which is findable, not recognisable.
    - min_score 0.75: above the detector's 0.7, so that a borderline detection (a background face, a profile,
      a pattern) must be clearly a face to be embedded; LFW's lowest score is 0.79 (0.1th percentile 0.85).
    - min_sharpness 25: LFW crops have a median Laplacian variance of 149 and a 1st percentile of 34; 25 keeps
      99.5% of them, and turns away 80% of crops blurred with a Gaussian of sigma 2 px (at 112 px) and 82% of
      faces shrunk to 24 px before alignment (29% at sigma 1.5, 36% at 32 px: mild blur passes, on purpose).
      The variance grows with contrast and crop size: measure again for another input size.
    """

    min_face_px: float = 32.0
    min_score: float = 0.75
    min_sharpness: float = 25.0

    def reasons(self, quality: FaceQuality) -> list[str]:
        out = []
        if quality.face_px < self.min_face_px:
            out.append(f"face {quality.face_px:.0f} px < {self.min_face_px:.0f} px")
        if quality.score < self.min_score:
            out.append(f"detection score {quality.score:.2f} < {self.min_score:.2f}")
        if quality.sharpness < self.min_sharpness:
            out.append(f"blurred: sharpness {quality.sharpness:.1f} < {self.min_sharpness:.1f}")
        return out

    @classmethod
    def open(cls) -> QualityGate:
        """A gate every face passes: where the caller overrides quality (an enrollment, training data)."""
        return cls(0.0, 0.0, 0.0)

    def passes(self, quality: FaceQuality) -> bool:
        return not self.reasons(quality)
