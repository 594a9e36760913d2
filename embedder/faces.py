"""From a decoded photo to the face crops a model embeds: the one policy every path shares.

Search, enrollment, ingestion, dataset preparation and evaluation all go through `FacePolicy.prepare`, so a face
that enrollment refused is never searched for with a different rule, and a model's crops at search time are
the crops it was evaluated on. The policy is built once from configuration (a detector, a quality gate, a
selection rule) and passed in; it reads nothing itself.

    rgb = load_rgb(data)                        # full resolution, EXIF applied, limits checked
    faces = policy.prepare(rgb, embedder.spec)  # [PreparedFace], or NoFace / TooManyFaces with the reasons
    vectors = embedder.embed(np.stack([f.chip for f in faces]))

For a spec with alignment "none" (pre-aligned data such as LFW-gray) the policy returns one pseudo-face covering
the spec's crop, the exact array decode_image gives, so callers keep one code path for both kinds of model.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from common.errors import BadInput
from embedder.align import align_face, template_for
from embedder.detect import ROTATIONS, Detector, Face, rotate
from embedder.errors import ImageError, ModelError, NoFace  # noqa: F401  (NoFace: its home for callers)
from embedder.preprocess import DEFAULT_MAX_PIXELS, DEFAULT_MIN_SIDE, box_face, load_rgb
from embedder.quality import FaceQuality, QualityGate, measure
from embedder.spec import ModelSpec

SELECTIONS = ("one", "largest", "all")


def check_named(select: str | None) -> None:
    """BadInput where faces taken under a person's name would be every face of the photo: a group photo in Ann's
    folder (or enrolled as Ann) would make everyone in it Ann, the mislabel the gallery check hunts for."""
    if select == "all":
        raise BadInput("every face of a photo ('all') is taken only for faces nobody has named (--unlabelled, "
                       "--strangers): under a person's name take the one face ('one', photos with several are "
                       "refused) or the largest ('largest')")


class TooManyFaces(ImageError):
    """More than one acceptable face where the policy needs exactly one (enrollment: whose face is it?)."""

    http_status = 422
    kind = "too many faces"


@dataclass(frozen=True, eq=False)
class PreparedFace:
    """A face ready to embed: `chip` is (h, w, 3) uint8 RGB at the spec's input_size; `reasons` are the quality
    gate's objections (empty when it passed). Crops of rotated faces are upright."""

    chip: np.ndarray = field(repr=False)
    face: Face
    quality: FaceQuality
    reasons: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return not self.reasons


@dataclass(frozen=True)
class FacePolicy:
    """How faces are found, judged and chosen.

    detector: finds faces for specs with alignment "five_point" (None serves "none" specs only).
    gate: the quality thresholds a face must meet to be returned.
    select: "one" (exactly one acceptable face, else NoFace or TooManyFaces: enrollment), "largest" (the largest
      acceptable face by box area: a photo of one person with bystanders), "all" (every acceptable face, best
      score first: search in a group photo).
    rotations: turns tried, in degrees counter-clockwise, when the photo as it is has no acceptable face (a
      scan or a phone photo that lost its EXIF orientation). All of them are tried and the turn whose best face
      scores highest wins: YuNet also finds many faces upside down (110 of 200 LFW faces at score 0.7), but on
      those 200 the upright face always scored higher, by 0.04 at least. () turns the fallback off.
    max_faces: at most this many detections (best score first) are aligned and judged, bounding the work a crowd
      photo costs.
    """

    detector: Detector | None = None
    gate: QualityGate = field(default_factory=QualityGate)
    select: str = "one"
    rotations: tuple[int, ...] = (90, 180, 270)
    max_faces: int = 20

    def __post_init__(self) -> None:
        if self.select not in SELECTIONS:
            raise ModelError(f"face selection must be one of {SELECTIONS}, got {self.select!r}")
        object.__setattr__(self, "rotations", tuple(self.rotations))
        bad = [r for r in self.rotations if r not in ROTATIONS or r == 0]
        if bad:
            raise ModelError(f"rotations must be among (90, 180, 270) degrees, got {bad}")
        if self.max_faces < 1:
            raise ModelError(f"max_faces must be at least 1, got {self.max_faces}")

    def examine(self, image: np.ndarray, spec: ModelSpec) -> list[PreparedFace]:
        """Every face found (at most max_faces, best score first), aligned and judged, whether it passes or not;
        the rotation fallback included. For alignment "none": the one pseudo-face, never gated."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ImageError(f"expected an (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}")
        if spec.alignment == "none":
            return [_whole_image(image, spec)]
        if self.detector is None:
            raise ModelError(f"spec alignment {spec.alignment!r} needs a face detector, and the policy has none")
        upright = self._examine_turned(image, spec, 0)
        if any(p.passed for p in upright):
            return upright
        best, best_score = upright, -1.0
        for rotation in self.rotations:
            found = self._examine_turned(image, spec, rotation)
            passing = [p.face.score for p in found if p.passed]
            if passing and passing[0] > best_score:
                best, best_score = found, passing[0]
        return best

    def none_found(self, image: np.ndarray) -> NoFace:
        """NoFace for a photo the detector found nothing in; one smaller than a face the gate takes says so."""
        small = min(image.shape[:2]) < self.gate.min_face_px
        return NoFace("no face found in the image" + (f" (it is {image.shape[1]}x{image.shape[0]} pixels: a face "
                                                      f"needs {self.gate.min_face_px:g} or more across)"
                                                      if small else ""))

    def prepare(self, image: np.ndarray, spec: ModelSpec) -> list[PreparedFace]:
        """The faces to embed from one full-resolution RGB photo, by the selection rule. Raises NoFace when no
        face passes the gate, TooManyFaces when "one" finds several."""
        found = self.examine(image, spec)
        accepted = [p for p in found if p.passed]
        if not accepted:
            if not found:
                raise self.none_found(image)
            why = "; ".join(", ".join(p.reasons) for p in found)
            count = f"{len(found)} face{'s' if len(found) > 1 else ''} found"
            raise NoFace(f"no face passes the quality gate ({count}: {why})")
        if self.select == "one":
            if len(accepted) > 1:
                raise TooManyFaces(f"{len(accepted)} faces in the image, expected exactly one")
            return accepted
        if self.select == "largest":
            return [max(accepted, key=lambda p: p.face.area)]
        return accepted

    def prepare_bytes(
        self,
        data: bytes,
        spec: ModelSpec,
        *,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        min_side: int = DEFAULT_MIN_SIDE,
    ) -> list[PreparedFace]:
        """`prepare` on encoded bytes (any format embedder.preprocess reads)."""
        return self.prepare(load_rgb(data, max_pixels=max_pixels, min_side=min_side), spec)

    def find_in_box(self, image: np.ndarray, box: tuple[float, float, float, float] | None) -> Face | None:
        """The face a box-crop model embedded from a pre-aligned picture: of the upright detections whose centre
        lies inside `box` (fractions of the picture, a box-crop spec's crop_box; None is the whole picture), the
        largest; None when there is none. No gate and no rotations: a picture a crop box fits is upright, and
        judging is `judge`'s, by the model that will embed the face."""
        if self.detector is None:
            raise ModelError("finding the face in a picture needs a face detector, and the policy has none")
        height, width = image.shape[:2]
        left, top, right, bottom = box or (0.0, 0.0, 1.0, 1.0)
        inside = [f for f in self.detector.detect(image)[: self.max_faces]
                  if left * width <= (f.box[0] + f.box[2]) / 2 <= right * width
                  and top * height <= (f.box[1] + f.box[3]) / 2 <= bottom * height]
        return max(inside, key=lambda f: f.area) if inside else None

    def judge(self, image: np.ndarray, face: Face, spec: ModelSpec) -> PreparedFace:
        """One face already found in `image` (its landmarks in `rotate(image, face.rotation)`), aligned for `spec`
        and judged by the gate, exactly as `examine` does with the faces it finds."""
        turned = np.ascontiguousarray(rotate(image, face.rotation)) if face.rotation else image
        chip = align_face(turned, face.landmarks, spec.input_size, interpolation=spec.interpolation)
        quality = measure(face, chip)
        return PreparedFace(chip, face, quality, tuple(self.gate.reasons(quality)))

    def _examine_turned(self, image: np.ndarray, spec: ModelSpec, rotation: int) -> list[PreparedFace]:
        turned = np.ascontiguousarray(rotate(image, rotation)) if rotation else image
        return [self.judge(image, replace(face, rotation=rotation) if rotation else face, spec)
                for face in self.detector.detect(turned)[: self.max_faces]]


def _whole_image(image: np.ndarray, spec: ModelSpec) -> PreparedFace:
    """Alignment "none": the spec's crop, with the template's landmarks placed in it as nominal positions (where
    a pre-aligned dataset puts the features); score 1 as nothing was detected, and no gate, as before faces."""
    height, width = image.shape[:2]
    left, top, right, bottom = spec.crop_box or (0.0, 0.0, 1.0, 1.0)
    x1, y1, x2, y2 = round(left * width), round(top * height), round(right * width), round(bottom * height)
    chip = box_face(image, spec)
    out_h, out_w = spec.input_size
    scale = np.array([(x2 - x1) / out_w, (y2 - y1) / out_h])
    landmarks = (template_for(spec.input_size) + 0.5) * scale - 0.5 + (x1, y1)
    face = Face((x1, y1, x2, y2), 1.0, landmarks)
    return PreparedFace(chip, face, measure(face, chip))


def face_record(face: PreparedFace) -> dict:
    """Where a face was found and how good it is, as JSON-ready values: API answers, the metadata stored with an
    enrolled or ingested face, reports."""
    q = face.quality
    return {"box": [round(v, 1) for v in face.face.box], "landmarks": np.round(face.face.landmarks, 1).tolist(),
            "detection_score": round(float(face.face.score), 4), "rotation": face.face.rotation,
            "quality": {"face_px": round(float(q.face_px), 1), "eye_px": round(float(q.eye_px), 1),
                        "sharpness": round(float(q.sharpness), 1), "passed": face.passed,
                        "reasons": list(face.reasons)}}
