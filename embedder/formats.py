"""Which image formats arcmatch decodes, told from the file's first bytes before any decoder runs.

Pillow opens dozens of formats, and some of them hand the bytes to other programs or to decoders few people
audit: EPS and PostScript go to Ghostscript (a classic remote-code-execution path), PDF, ICNS, FITS, XPM and the
rest are rarely photos. A face platform needs the formats cameras, phones and photo tools write, so anything else
is refused by name (HTTP 415) instead of being guessed at. The name in the file (its suffix, the upload's content
type) is never trusted: only the magic bytes decide, and Pillow is then told to try that one format only.
"""

from __future__ import annotations

from common.photos import sniff as photo_format
from embedder.errors import ImageError


class UnsupportedFormat(ImageError):
    """Bytes that are not one of the allowed image formats (a PDF, a PostScript file, a HEIC, a text file)."""

    http_status = 415
    kind = "unsupported media type"


# the decoders Pillow may use for each format we recognise; Pillow's JPEG opener also reads MPO, the multi-picture
# JPEG many phones write (naming "MPO" here made a JPEG that does not decode a KeyError: Pillow has no opener so called)
ALLOWED = {
    "JPEG": ("JPEG",),
    "PNG": ("PNG",),
    "WEBP": ("WEBP",),
    "BMP": ("BMP",),
    "TIFF": ("TIFF",),
    "GIF": ("GIF",),  # its first frame
    "PPM": ("PPM",),  # PBM, PGM and PPM (the ORL faces are PGM)
}
# the allowed formats as a person names them: Pillow's "PPM" opens the whole Netpbm family
NAMED = ", ".join({"PPM": "PBM/PGM/PPM"}.get(name, name) for name in ALLOWED)
# formats people send that we name in the refusal, so the caller knows what it sent
_KNOWN_REFUSED = [
    (b"%!PS", "PostScript/EPS"),
    (b"\xc5\xd0\xd3\xc6", "EPS"),
    (b"%PDF", "PDF"),
    (b"<svg", "SVG"),
    (b"<?xml", "XML/SVG"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (b"\xff\x4f\xff\x51", "JPEG 2000"),
    (b"icns", "ICNS"),
    (b"SIMPLE", "FITS"),
    (b"8BPS", "Photoshop"),
    (b"\x00\x00\x01\x00", "ICO"),
]


def sniff(data: bytes) -> str | None:
    """The allowed format these bytes start with, or None (the magic numbers: common/photos.py, which lists a
    folder's photos by them too)."""
    return photo_format(data)


def _describe(data: bytes) -> str:
    head = data[:16]
    if head[4:8] == b"ftyp":
        brand = head[8:12].decode("ascii", "replace").strip()
        return "HEIC/HEIF" if brand.startswith(("hei", "mif", "hev", "msf")) else f"an ISO media file ({brand})"
    for magic, name in _KNOWN_REFUSED:
        if head.startswith(magic):
            return name
    return "not an image format arcmatch reads"


def decoders_for(data: bytes) -> tuple[str, ...]:
    """The Pillow formats allowed to open `data`; UnsupportedFormat when its first bytes are not an allowed one."""
    if not data:
        raise ImageError("empty file")
    found = sniff(data)
    if found is None:
        raise UnsupportedFormat(f"unsupported image format ({_describe(data)}); send {NAMED}")
    return ALLOWED[found]
