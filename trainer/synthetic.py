"""Procedurally drawn face-like identities, so the demo and the tests need no downloaded data.

Each identity is a fixed set of shape and colour parameters (face outline, skin, hair style, eyes, brows, nose,
mouth, optional beard, glasses and mole). Each image of it varies by expression, pose (shift, scale, rotation),
lighting, blur, noise, background and a random occluding patch: the identity is learnable from the image, yet
no two images of it match pixel for pixel, and neighbouring identities can look alike.
"""

from __future__ import annotations

import math
import multiprocessing
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

_CANVAS = 128  # drawn at 2x the usual output and downsampled, for anti-aliased edges
Box = tuple[int, int, int, int]  # left, top, right, bottom in pixels


@dataclass(frozen=True)
class Identity:
    """Parameters fixed for one synthetic person; all lengths are fractions of the canvas."""

    face_w: float
    face_h: float
    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    hair_top: float
    hair_side: float
    eye_y: float
    eye_dx: float
    eye_r: float
    iris: tuple[int, int, int]
    brow_gap: float
    brow_tilt: float
    brow_w: float
    nose_len: float
    nose_w: float
    mouth_y: float
    mouth_w: float
    mouth_curve: float
    lip: tuple[int, int, int]
    beard: bool
    glasses: bool
    mole: tuple[float, float] | None


def _colour(rng: np.random.Generator, low: tuple[int, int, int], high: tuple[int, int, int]) -> tuple[int, ...]:
    return tuple(int(rng.integers(lo, hi + 1)) for lo, hi in zip(low, high, strict=True))


def make_identity(seed: int, index: int) -> Identity:
    rng = np.random.default_rng([seed, index])
    return Identity(
        face_w=rng.uniform(0.27, 0.38),
        face_h=rng.uniform(0.36, 0.46),
        skin=_colour(rng, (120, 80, 60), (245, 215, 190)),
        hair=_colour(rng, (10, 10, 10), (200, 160, 110)),
        hair_top=rng.uniform(0.02, 0.16),
        hair_side=rng.uniform(0.0, 0.3),
        eye_y=rng.uniform(0.40, 0.48),
        eye_dx=rng.uniform(0.09, 0.16),
        eye_r=rng.uniform(0.028, 0.055),
        iris=_colour(rng, (20, 20, 20), (120, 160, 200)),
        brow_gap=rng.uniform(0.04, 0.09),
        brow_tilt=rng.uniform(-0.04, 0.04),
        brow_w=rng.uniform(0.008, 0.03),
        nose_len=rng.uniform(0.07, 0.16),
        nose_w=rng.uniform(0.025, 0.065),
        mouth_y=rng.uniform(0.66, 0.76),
        mouth_w=rng.uniform(0.06, 0.15),
        mouth_curve=rng.uniform(-0.03, 0.04),
        lip=_colour(rng, (110, 30, 30), (220, 120, 120)),
        beard=bool(rng.random() < 0.25),
        glasses=bool(rng.random() < 0.2),
        mole=(rng.uniform(0.3, 0.7), rng.uniform(0.45, 0.7)) if rng.random() < 0.4 else None,
    )


def _draw_face(ident: Identity, rng: np.random.Generator, background: tuple[int, ...]) -> Image.Image:
    s = _CANVAS
    img = Image.new("RGB", (s, s), background)
    d = ImageDraw.Draw(img)
    cx, cy = 0.5, 0.52

    def box(x0: float, y0: float, x1: float, y1: float) -> list[float]:
        return [x0 * s, y0 * s, x1 * s, y1 * s]

    # hair behind the face, then the face
    d.ellipse(box(cx - ident.face_w - 0.03, cy - ident.face_h - ident.hair_top,
                  cx + ident.face_w + 0.03, cy + ident.face_h * (ident.hair_side * 2 - 0.2)), fill=ident.hair)
    d.ellipse(box(cx - ident.face_w, cy - ident.face_h, cx + ident.face_w, cy + ident.face_h), fill=ident.skin)
    if ident.beard:
        d.chord(box(cx - ident.face_w, cy - ident.face_h * 0.2, cx + ident.face_w, cy + ident.face_h),
                10, 170, fill=ident.hair)
    # per-image expression: eye openness and smile vary a little
    openness = rng.uniform(0.55, 1.0)
    curve = ident.mouth_curve + rng.normal(0, 0.008)
    for side in (-1, 1):
        ex = cx + side * ident.eye_dx
        r = ident.eye_r
        d.ellipse(box(ex - r * 1.4, ident.eye_y - r * openness, ex + r * 1.4, ident.eye_y + r * openness),
                  fill=(245, 245, 240))
        d.ellipse(box(ex - r * 0.7, ident.eye_y - r * 0.7 * openness, ex + r * 0.7, ident.eye_y + r * 0.7 * openness),
                  fill=ident.iris)
        by = ident.eye_y - ident.eye_r - ident.brow_gap
        d.line([((ex - r * 1.6) * s, (by + side * ident.brow_tilt) * s),
                ((ex + r * 1.6) * s, (by - side * ident.brow_tilt) * s)],
               fill=ident.hair, width=max(1, round(ident.brow_w * s)))
        if ident.glasses:
            d.ellipse(box(ex - r * 2.1, ident.eye_y - r * 1.8, ex + r * 2.1, ident.eye_y + r * 1.8),
                      outline=(30, 30, 30), width=2)
    if ident.glasses:
        d.line([((cx - ident.eye_dx + ident.eye_r * 2.1) * s, ident.eye_y * s),
                ((cx + ident.eye_dx - ident.eye_r * 2.1) * s, ident.eye_y * s)], fill=(30, 30, 30), width=2)
    nose_top = ident.eye_y + 0.02
    shade = tuple(max(0, c - 45) for c in ident.skin)
    d.polygon([(cx * s, nose_top * s), ((cx - ident.nose_w) * s, (nose_top + ident.nose_len) * s),
               ((cx + ident.nose_w) * s, (nose_top + ident.nose_len) * s)], fill=shade)
    mw, my = ident.mouth_w, ident.mouth_y
    d.line([((cx - mw) * s, (my - curve) * s), (cx * s, (my + curve) * s), ((cx + mw) * s, (my - curve) * s)],
           fill=ident.lip, width=max(2, round(0.022 * s)), joint="curve")
    if ident.mole is not None:
        mx, my2 = ident.mole
        d.ellipse(box(mx - 0.012, my2 - 0.012, mx + 0.012, my2 + 0.012), fill=(60, 35, 25))
    return img


def _pose(img: Image.Image, rng: np.random.Generator, background: tuple[int, ...], v: float) -> Image.Image:
    s = _CANVAS
    angle = math.radians(rng.uniform(-12 * v, 12 * v))
    scale = rng.uniform(1 - 0.12 * v, 1 + 0.12 * v)
    tx, ty = rng.uniform(-0.06 * v, 0.06 * v, size=2) * s
    # inverse affine map (output -> input), about the canvas centre
    cos_a, sin_a = math.cos(angle) / scale, math.sin(angle) / scale
    c = s / 2
    coeffs = (cos_a, sin_a, c - cos_a * (c + tx) - sin_a * (c + ty),
              -sin_a, cos_a, c + sin_a * (c + tx) - cos_a * (c + ty))
    return img.transform((s, s), Image.Transform.AFFINE, coeffs, Image.Resampling.BILINEAR, fillcolor=background)


def _photometric(img: Image.Image, rng: np.random.Generator, size: int, v: float) -> tuple[np.ndarray, Box | None]:
    if rng.random() < 0.3 * v:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.6)))
    img = img.resize((size, size), Image.Resampling.LANCZOS)
    x = np.asarray(img, dtype=np.float32)
    # side lighting: a linear ramp in a random direction, plus global gain/offset and a colour cast
    theta = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:size, 0:size] / size - 0.5
    ramp = 1.0 + rng.uniform(0, 0.5 * v) * (np.cos(theta) * xx + np.sin(theta) * yy)
    gain = rng.uniform(1 - 0.3 * v, 1 + 0.25 * v) * rng.uniform(1 - 0.08 * v, 1 + 0.08 * v, size=3)
    x = x * ramp[..., None] * gain + rng.uniform(-20 * v, 20 * v)
    x += rng.normal(0, rng.uniform(0, 10 * v), size=x.shape)
    occluder = None
    if rng.random() < 0.3 * v:  # occluder: a solid patch of 20-50% of the image's width and height
        w, h = (rng.uniform(0.2, 0.5, size=2) * size).astype(int)
        x0, y0 = rng.integers(0, size - w), rng.integers(0, size - h)
        x[y0 : y0 + h, x0 : x0 + w] = rng.integers(0, 256, size=3)
        occluder = (int(x0), int(y0), int(x0 + w), int(y0 + h))
    return np.clip(x, 0, 255).astype(np.uint8), occluder


@dataclass(frozen=True)
class Photo:
    """A drawn image and what was done to it that matters when judging a model: where an occluder covers it."""

    image: np.ndarray
    occluder: Box | None


def draw(ident: Identity, rng: np.random.Generator, size: int = 64, *, variation: float = 1.0) -> Photo:
    """One photo of `ident`: a (size, size, 3) uint8 RGB image and its occluder, if it has one. An analysis of a
    model's misses replays an identity's generator to learn which photos were occluded (bench/demo_misses.py).

    `variation` scales how far a photo strays from the identity's plain portrait (pose, lighting, noise, and how
    often blur and an occluder come): 1 is the training data's spread, smaller is a cooperative subject before a
    badge camera. It scales ranges, never the number of draws, so variation 1 gives the images it always gave."""
    background = tuple(int(v) for v in rng.integers(0, 256, size=3))
    face = _draw_face(ident, rng, background)
    return Photo(*_photometric(_pose(face, rng, background, variation), rng, size, variation))


def render(ident: Identity, rng: np.random.Generator, size: int = 64, *, variation: float = 1.0) -> np.ndarray:
    """One image of `ident` as (size, size, 3) uint8 RGB."""
    return draw(ident, rng, size, variation=variation).image


def identity_name(index: int, prefix: str = "person") -> str:
    """The folder (and identity) name `write_dataset` gives identity `index`."""
    return f"{prefix}_{index:05d}"


def write_dataset(
    root: str | Path,
    identities: range | list[int],
    images_per_identity: int | Mapping[int, int],
    *,
    seed: int = 0,
    size: int = 64,
    prefix: str = "person",
    workers: int = 1,
) -> list[Path]:
    """Write `root/<prefix>_<index>/<n>.png` for each identity index: `images_per_identity` photos of each, or as
    many as it maps the index to. Deterministic for a given seed, whatever `workers`: each identity draws from its
    own generator, so processes can split the identities between them (the demo's 16,000 images would take over a
    minute in one process on a slow 2-core machine), and an identity's first n photos are the same images whatever
    its count."""
    identities = list(identities)
    counts = (dict.fromkeys(identities, images_per_identity) if isinstance(images_per_identity, int)
              else {i: images_per_identity[i] for i in identities})
    draw = partial(_write_identities, Path(root), seed=seed, size=size, prefix=prefix)
    chunks = [{int(i): counts[int(i)] for i in part}
              for part in np.array_split(np.asarray(identities, dtype=int), max(1, workers)) if len(part)]
    if len(chunks) <= 1:
        return draw(counts)
    # spawn, not fork: the caller may already run Ray's or torch's threads
    with ProcessPoolExecutor(len(chunks), mp_context=multiprocessing.get_context("spawn")) as pool:
        return [path for part in pool.map(draw, chunks) for path in part]


def _write_identities(root: Path, counts: dict[int, int], *, seed: int, size: int, prefix: str) -> list[Path]:
    written = []
    for index, count in counts.items():
        ident = make_identity(seed, index)
        rng = np.random.default_rng([seed, index, 1])
        folder = root / identity_name(index, prefix)
        folder.mkdir(parents=True, exist_ok=True)
        for n in range(count):
            path = folder / f"{n:03d}.png"
            Image.fromarray(render(ident, rng, size)).save(path)
            written.append(path)
    return written
