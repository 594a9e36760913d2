"""Which files of a folder are photos: `arcmatch ingest` (embedder/sources.py) and the client's `enroll_batch` list
a folder with the same rule, so one folder means the same photos to both, and the formats told from a file's first
bytes (embedder/formats.py decides from them which decoder may run; a name is never trusted for that).

A file is a photo when its name says so, or when its first bytes are a photo format's whatever its name: a QA pass
lost, without a word, a JPEG exported without a suffix (`IMG_0001`), one named `.jfif`, and a phone's `.HEIC`.
A HEIC or AVIF photo is listed like any other and then refused by name (arcmatch does not decode it), so the
report says what to convert; a notes.txt or a video beside the photos is left alone. Links are followed, to files
and to folders (a person's folder of years linked in from elsewhere), each folder once; a link whose target is
gone is listed, and its photo reported unreadable, never passed over.
"""

from __future__ import annotations

import os
from pathlib import Path

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".pbm", ".pgm", ".ppm", ".tif",
                            ".tiff", ".webp", ".gif", ".heic", ".heif", ".avif"})
# the brands of an ISO media file that hold a still photo (HEIF, HEIC, AVIF); a video's are others (isom, qt, mp42)
PHOTO_BRANDS = (b"hei", b"hev", b"mif1", b"msf1", b"avif", b"avis")


def sniff(head: bytes) -> str | None:
    """The format a file's first bytes say it is, among those arcmatch decodes (Pillow's names), or None."""
    head = head[:16]
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head.startswith(b"BM"):
        return "BMP"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if len(head) >= 3 and head[0:1] == b"P" and head[1:2] in b"123456" and head[2:3] in b" \t\r\n#":
        return "PPM"
    return None


def _photo_bytes(head: bytes) -> bool:
    """A photo format by its magic alone. BMP's and Netpbm's two letters ("BM", "P5 ") also start text files, so
    those count only by their names."""
    return sniff(head) not in (None, "BMP", "PPM") or (head[4:8] == b"ftyp" and head[8:12].startswith(PHOTO_BRANDS))


def is_photo(path: Path) -> bool:
    """A file named as a photo (a link to one, or a link whose target is gone: reported when it is read), or any
    other file whose first bytes are a photo's."""
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return path.is_file() or (path.is_symlink() and not path.exists())
    if not path.is_file():
        return False
    try:
        with open(path, "rb") as handle:
            return _photo_bytes(handle.read(16))
    except OSError:
        return False


def photos_under(folder: Path) -> list[Path]:
    """Every photo at any depth under `folder`, sorted; hidden files and folders (a name starting with a dot)
    left out. Linked folders are followed, each real folder once, so a link back up does not loop."""
    seen, found = set(), []
    for top, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(top)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(top) / name for name in files if not name.startswith(".") and is_photo(Path(top) / name)]
    return sorted(found)
