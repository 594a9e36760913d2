"""The face image a gallery keeps for the next model (indexer/archive.py), and the way back from it to a model's input.

What is kept must serve models that do not exist yet, so it is not this model's input:
- For models that want five-point aligned faces: the face warped onto the ArcFace template at 128 px wide, in the
  middle of a 256x256 image. The margin around it leaves room for a model that crops wider, and because the
  landmarks of the kept face are known (ARCHIVE_TEMPLATE), any five-point model's crop is one more warp of it, at
  its own size and template: no detection again, and a face found in a rotated photo stays upright.
- For models that crop by a box (alignment "none", pre-aligned data sets): the decoded picture itself, at most
  MAX_PHOTO_SIDE on its longer side; the box is the model's, so it is applied when the model reads it. Where a
  face detector is configured, the face inside the model's box is located once, at archiving, and its box and
  landmarks ride in the PNG's text (FACE_KEY): a five-point model read later aligns it without a second
  detection, and a picture archived without them is detected again then (`model_input` with a policy).
Both are stored as PNG (lossless): re-embedding with the same model gives back the same vectors, near enough
to search by (tests/embedder/test_archiving.py).

The other way has no honest road: a face archived aligned holds no trace of how the pre-aligned data set a
box-crop model was trained on placed its faces, so such a model refuses it (the re-embed's dry run says so before
any work).
"""

from __future__ import annotations

import io
import json

import numpy as np
from PIL import Image, PngImagePlugin

from embedder.align import align_face, template_for
from embedder.detect import Face, rotate
from embedder.errors import ImageError, ModelError
from embedder.faces import FacePolicy, NoFace
from embedder.preprocess import crop_and_resize
from embedder.spec import ModelSpec

ARCHIVE_SIZE = (256, 256)
ARCHIVE_TEMPLATE = template_for((128, 128)) + 64.0  # the template at 128 px, centred in the 256 px image
ARCHIVE_TEMPLATE.setflags(write=False)
MAX_PHOTO_SIDE = 1024
KINDS = ("aligned", "photo")
FACE_KEY = "arcmatch-face"  # PNG text of an archived photo: the located face's box, landmarks and score (JSON)


def archive_view(photo: np.ndarray, prepared, spec: ModelSpec) -> tuple[np.ndarray, str]:
    """(image, kind) to archive for one face that `spec`'s model embedded from `photo` (the full RGB picture) as
    `prepared` (an embedder.faces.PreparedFace)."""
    if spec.alignment == "none":
        height, width = photo.shape[:2]
        scale = MAX_PHOTO_SIDE / max(height, width)
        if scale >= 1:
            return photo, "photo"
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        return np.asarray(Image.fromarray(photo).resize(size, Image.Resampling.LANCZOS)), "photo"
    face = prepared.face
    turned = np.ascontiguousarray(rotate(photo, face.rotation)) if face.rotation else photo
    return align_face(turned, face.landmarks, ARCHIVE_SIZE, template=ARCHIVE_TEMPLATE,
                      interpolation=spec.interpolation), "aligned"


def kept_face(photo: np.ndarray, prepared, spec: ModelSpec, policy: FacePolicy | None = None) -> tuple[bytes, str]:
    """(encoded image, kind) to archive for one face: `archive_view`, PNG-encoded; for a photo, with the face
    inside the model's crop box located when `policy` has a detector (none found: kept without, as before)."""
    image, kind = archive_view(photo, prepared, spec)
    face = None
    if kind == "photo" and policy is not None and policy.detector is not None:
        face = policy.find_in_box(image, spec.crop_box)
    return encode(image, face), kind


def encode(image: np.ndarray, face: Face | None = None) -> bytes:
    """PNG; a grey picture decoded to three equal channels is kept as one (a third of the bytes, same pixels back).
    `face` (in the image's pixels) goes into the PNG's text."""
    if image.ndim == 3 and image.shape[2] == 3 and (image[..., 0] == image[..., 1]).all() \
            and (image[..., 1] == image[..., 2]).all():
        image = image[..., 0]
    text = None
    if face is not None:
        text = PngImagePlugin.PngInfo()
        text.add_text(FACE_KEY, json.dumps({"box": [round(v, 2) for v in face.box], "score": round(face.score, 4),
                                            "landmarks": np.round(face.landmarks, 2).tolist(),
                                            "rotation": face.rotation}))
    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(out, format="PNG", compress_level=6, pnginfo=text)
    return out.getvalue()


def decode(data: bytes) -> np.ndarray:
    return decode_with_face(data)[0]


# two archived images are one picture when their pixels differ by less than this on average (of 255): a photo
# saved again as JPEG moves them by one or two levels, another photo of the same moment by tens
SAME_PICTURE_LEVELS = 3.0


def same_picture(first: bytes, second: bytes) -> bool:
    """Whether two archived images (of one kind) show one picture: the same size and nearly the same pixels. A
    face model's vectors cannot say it alone: a weak model scores two photos of one person 0.995 and more."""
    a, b = decode(first), decode(second)
    return a.shape == b.shape and float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean()) < SAME_PICTURE_LEVELS


def decode_with_face(data: bytes) -> tuple[np.ndarray, Face | None]:
    """The archived image, and the face located in it at archiving (None when none was)."""
    try:
        with Image.open(io.BytesIO(data), formats=["PNG"]) as img:
            image = np.asarray(img.convert("RGB"), dtype=np.uint8)
            text = img.text.get(FACE_KEY) if hasattr(img, "text") else None
    except (OSError, ValueError) as exc:
        raise ImageError(f"an archived face could not be read: {exc}") from None
    if not text:
        return image, None
    try:
        found = json.loads(text)
        return image, Face(tuple(found["box"]), float(found["score"]), np.asarray(found["landmarks"], np.float32),
                           int(found.get("rotation", 0)))
    except (ValueError, KeyError, TypeError) as exc:
        raise ImageError(f"an archived face's located face could not be read: {exc}") from None


def model_input(data: bytes, kind: str, spec: ModelSpec, policy: FacePolicy | None = None,
                box: tuple[float, float, float, float] | None = None) -> np.ndarray:
    """An archived face -> `spec`'s model input ((h, w, 3) uint8 at spec.input_size).

    A photo read by a five-point model is aligned on the face located at archiving, else on the face `policy`'s
    detector finds inside `box` (the crop box of the model that archived it: the face that was in the gallery),
    and judged by `policy`'s gate as ingestion judges faces. ModelError says a whole kind cannot be read (aligned
    faces for a box-crop model); ImageError (NoFace among them) says this face cannot."""
    if kind not in KINDS:
        raise ImageError(f"unknown archived face kind {kind!r} (expected one of {KINDS})")
    if kind == "aligned":
        if spec.alignment == "none":
            raise ModelError("these faces were archived aligned for a five-point model; a model that crops by a box "
                             "(alignment none) cannot read them: re-embed with a five-point model")
        return align_face(decode(data), ARCHIVE_TEMPLATE, spec.input_size, interpolation=spec.interpolation)
    image, face = decode_with_face(data)
    if spec.alignment == "none":
        return crop_and_resize(image, spec)
    if face is None:
        if policy is None or policy.detector is None:  # this face only: others of its kind may carry theirs
            raise ImageError("archived as a photo without its landmarks, and no face detector is configured to "
                             "find them again: give one with --detector or ARCMATCH_DETECTOR")
        face = policy.find_in_box(image, box)
        if face is None:
            raise NoFace("no face found inside the crop box of the model that archived the photo")
    prepared = (policy or FacePolicy()).judge(image, face, spec)
    if not prepared.passed:
        raise NoFace(f"the face does not pass the quality gate ({', '.join(prepared.reasons)})")
    return prepared.chip


def thumbnail(data: bytes, kind: str, crop_box: tuple[float, float, float, float] | None = None,
              side: int = 112) -> bytes:
    """A small JPEG of an archived face for people to look at: the face and a little around it for an aligned
    entry; for a photo, the model's crop box (fractions of the picture) when it has one, else the whole picture."""
    image = decode(data)
    if kind == "aligned":  # the 128 px face of ARCHIVE_TEMPLATE with 8 px around it
        picture = Image.fromarray(np.ascontiguousarray(image[56:200, 56:200])).resize((side, side))
    else:
        if crop_box is not None:
            h, w = image.shape[:2]
            x1, y1, x2, y2 = crop_box
            image = image[round(y1 * h) : round(y2 * h), round(x1 * w) : round(x2 * w)]
        picture = Image.fromarray(np.ascontiguousarray(image))
        picture.thumbnail((side, side))
    out = io.BytesIO()
    picture.save(out, format="JPEG", quality=85)
    return out.getvalue()
