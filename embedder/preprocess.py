"""Decode any image the way every path of arcmatch does: training, ingestion, the API.

One function turns bytes into a fixed-size uint8 RGB array (EXIF rotation applied, every PIL mode converted,
crop and resize from the ModelSpec); its first half, `load_rgb` (the full-resolution photo), is what face detection
and alignment start from (embedder/faces.py). Another normalises a batch of those into the model's float input.
Keeping the uint8 step separate lets Ray ship compact arrays from CPU decode tasks to the embedding actors.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from embedder.errors import ImageError, ModelError, NoFace
from embedder.formats import decoders_for
from embedder.spec import ModelSpec

DEFAULT_MAX_PIXELS = 40_000_000  # refuses decompression bombs long before they allocate
DEFAULT_MIN_SIDE = 16
_RESAMPLE = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
}


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB; transparent pixels become white rather than undefined colours."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit and float greyscale: scale the real range to 0..255 instead of clipping at 255.
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scaled = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
        return Image.fromarray(scaled.round().astype(np.uint8), mode="L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def _open_rgb(data: bytes, max_pixels: int, min_side: int) -> Image.Image:
    decoders = decoders_for(data)  # the allow-list, from the magic bytes, before any decoder sees the data
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=decoders)
            width, height = img.size
            if width * height > max_pixels:
                raise ImageError(f"image is {width}x{height}, over the limit of {max_pixels} pixels "
                                 "(ARCMATCH_MAX_PIXELS)")
            if min(width, height) < min_side:
                raise ImageError(f"image is {width}x{height}, smaller than {min_side} px on a side")
            img.load()
            img = ImageOps.exif_transpose(img)
    except ImageError:
        raise
    except UnidentifiedImageError:  # Pillow's text names its buffer object (a memory address): not for a caller
        raise ImageError(f"not a readable image: its first bytes say {decoders[0]}, but it does not decode as "
                         "one") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):  # Pillow's own ceiling, met first
        # said as the limit it passed: ours where it is the lower (two numbers read as a contradiction)
        limit = min(max_pixels, Image.MAX_IMAGE_PIXELS)
        whose = "ARCMATCH_MAX_PIXELS" if limit == max_pixels else "the decoder's own, below ARCMATCH_MAX_PIXELS"
        raise ImageError(f"image is over the limit of {limit} pixels ({whose})") from None
    except (OSError, SyntaxError, ValueError) as exc:  # PIL reports truncated/corrupt data as these
        raise ImageError(f"corrupt image data: {exc}") from exc
    return _to_rgb(img)


def load_rgb(
    data: bytes,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int = DEFAULT_MIN_SIDE,
) -> np.ndarray:
    """Bytes of an allowed format (embedder/formats.py) -> the full-resolution (H, W, 3) uint8 RGB array, EXIF
    rotation applied and the size limits checked: what the face detector and the aligner work on. Raises
    ImageError."""
    return np.asarray(_open_rgb(data, max_pixels, min_side), dtype=np.uint8)


def crop_and_resize(image: Image.Image | np.ndarray, spec: ModelSpec) -> np.ndarray:
    """A decoded RGB image -> (H, W, 3) uint8 at spec.input_size by the spec's crop_box and resize: the whole of
    alignment "none"."""
    img = image if isinstance(image, Image.Image) else Image.fromarray(np.ascontiguousarray(image))
    if spec.crop_box is not None:
        left, top, right, bottom = spec.crop_box
        w, h = img.size
        img = img.crop((round(left * w), round(top * h), round(right * w), round(bottom * h)))
    height, width = spec.input_size
    if img.size != (width, height):
        img = img.resize((width, height), _RESAMPLE[spec.interpolation])
    return np.asarray(img, dtype=np.uint8)


def decode_image(
    data: bytes,
    spec: ModelSpec,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int = DEFAULT_MIN_SIDE,
) -> np.ndarray:
    """Bytes of an allowed format -> (H, W, 3) uint8 RGB array at spec.input_size. Raises ImageError.

    For specs with alignment "none" only: a five-point spec needs a detector, which embedder.faces.FacePolicy
    holds, and cropping such a model's input by a box instead would give vectors that silently mean less."""
    if spec.alignment != "none":
        raise ModelError(f"spec alignment {spec.alignment!r} needs face detection: prepare images with "
                         "embedder.faces.FacePolicy (from embedder.preprocess.load_rgb), not decode_image")
    return crop_and_resize(_open_rgb(data, max_pixels, min_side), spec)


# a crop whose pixels spread less than this (standard deviation, 0-255) is one colour: a blank frame, a lens cap,
# a placeholder picture. A box-crop model has no detector to say "no face", and embedded it would be a face of
# whoever it was filed under, near every other blank one (a QA pass: a grey 250x250 JPEG joined a gallery). The
# crops of 2,000 LFW-gray photos spread 19 at the least (median 51); JPEG noise on a flat grey is far below.
FLAT_SPREAD = 2.0


def refuse_flat(chip: np.ndarray) -> np.ndarray:
    """`chip`, or NoFace where it is one flat colour."""
    spread = float(chip.std())
    if spread < FLAT_SPREAD:
        raise NoFace(f"the crop is one flat colour (pixel spread {spread:.1f} of 255): no face to embed")
    return chip


def box_face(photo: Image.Image | np.ndarray, spec: ModelSpec) -> np.ndarray:
    """A box-crop model's face in a decoded photo: its crop box, resized, or NoFace where that is one flat colour."""
    return refuse_flat(crop_and_resize(photo, spec))


def normalize_batch(images: np.ndarray, spec: ModelSpec, *, channels_last: bool = False) -> np.ndarray:
    """(N, H, W, 3) uint8 RGB -> (N, 3, H, W) float32, channel order, mean and std from the spec.

    channels_last: the same values as a view whose memory stays (N, H, W, 3), which torch takes as a channels-last
    tensor without a copy (embedder/model.py); otherwise a contiguous NCHW array, as ONNX Runtime wants. The
    arithmetic runs in place, in the same order as ever (so the values are bit for bit those of earlier releases):
    at the demo's batch of 64 this took a third of the time of the copying version, transposes included."""
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ImageError(f"expected a (N, H, W, 3) uint8 batch, got shape {images.shape}")
    x = images.astype(np.float32)
    if spec.channel_order == "BGR":
        x = np.ascontiguousarray(x[..., ::-1])
    x /= np.float32(255.0)
    x -= np.asarray(spec.mean, dtype=np.float32)
    x /= np.asarray(spec.std, dtype=np.float32)
    x = x.transpose(0, 3, 1, 2)
    return x if channels_last else np.ascontiguousarray(x)
