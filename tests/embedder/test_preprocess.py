import io

import numpy as np
import pytest
from PIL import Image

from embedder.errors import ImageError
from embedder.preprocess import decode_image, normalize_batch
from embedder.spec import ModelSpec

SPEC = ModelSpec("resnet18", input_size=(20, 20))


def encode(img: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def test_grayscale_becomes_three_equal_channels():
    out = decode_image(encode(Image.new("L", (40, 40), 77)), SPEC)
    assert out.shape == (20, 20, 3) and out.dtype == np.uint8
    assert (out == 77).all()


def test_transparent_pixels_become_white():
    img = Image.new("RGBA", (40, 40), (255, 0, 0, 0))
    out = decode_image(encode(img), SPEC)
    assert (out == 255).all()


def test_palette_and_cmyk_convert_to_rgb():
    pal = Image.new("RGB", (40, 40), (10, 200, 30)).convert("P", palette=Image.Palette.ADAPTIVE)
    assert tuple(decode_image(encode(pal), SPEC)[5, 5]) == (10, 200, 30)
    cmyk = Image.new("CMYK", (40, 40), (0, 255, 255, 0))  # pure red
    red = decode_image(encode(cmyk, "JPEG", quality=95), SPEC)[5, 5]
    assert red[0] > 200 and red[1] < 60 and red[2] < 60


def test_sixteen_bit_uses_its_whole_range():
    arr = np.zeros((40, 40), dtype=np.uint16)
    arr[:, 20:] = 60000
    out = decode_image(encode(Image.fromarray(arr)), SPEC)
    assert out[:, :8].max() == 0 and out[:, 12:].min() == 255


def test_exif_rotation_is_applied():
    img = Image.new("RGB", (40, 20), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 20, 20))  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    out = decode_image(encode(img, "JPEG", exif=exif, quality=95), ModelSpec("r", input_size=(40, 20)))
    assert out.shape == (40, 20, 3)
    assert out[:15].mean() > 200 and out[25:].mean() < 50  # the white half is now on top


def test_crop_box_is_fractional():
    arr = np.zeros((100, 100, 3), np.uint8)
    arr[25:75, 25:75] = 255
    spec = ModelSpec("r", input_size=(20, 20), crop_box=(0.25, 0.25, 0.75, 0.75))
    assert (decode_image(encode(Image.fromarray(arr)), spec) == 255).all()


@pytest.mark.parametrize("data, reason", [
    (b"", "empty"),
    (b"not an image at all", "unsupported image format"),
    (encode(Image.new("RGB", (40, 40)))[:60], "corrupt"),
    (encode(Image.new("RGB", (8, 40))), "smaller than"),
    (b"\xff\xd8\xff", "say JPEG, but it does not decode"),
    (encode(Image.new("RGB", (40, 40)), "JPEG")[:20], "JPEG"),
])
def test_bad_input_raises_image_error(data, reason):
    with pytest.raises(ImageError, match=reason):
        decode_image(data, SPEC)


def test_a_multi_picture_jpeg_decodes_its_first_picture():
    first, second = Image.new("RGB", (40, 40), (200, 0, 0)), Image.new("RGB", (40, 40), (0, 0, 200))
    data = encode(first, "MPO", save_all=True, append_images=[second])
    out = decode_image(data, SPEC)
    assert out[..., 0].mean() > 150 and out[..., 2].mean() < 50


def test_pixel_limit_refuses_bombs_before_decoding():
    data = encode(Image.new("L", (3000, 3000)))
    with pytest.raises(ImageError, match="over the limit"):
        decode_image(data, SPEC, max_pixels=1_000_000)


def test_a_photo_past_the_decoders_own_ceiling_is_said_with_one_limit(monkeypatch):
    """Pillow refuses to open past its ceiling before our limit is read: the answer names the lower of the two,
    where it named Pillow's and ours side by side ("over 89478485 pixels ... the limit set is 40000000")."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)
    data = encode(Image.new("L", (3000, 3000)))
    with pytest.raises(ImageError, match=r"^image is over the limit of 500000 pixels \(ARCMATCH_MAX_PIXELS\)$"):
        decode_image(data, SPEC, max_pixels=500_000)
    with pytest.raises(ImageError, match="over the limit of 1000000 pixels .the decoder's own, below ARCMATCH"):
        decode_image(data, SPEC, max_pixels=40_000_000)


def test_normalize_batch_layout_and_bgr():
    spec = ModelSpec("r", input_size=(8, 8), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), channel_order="BGR")
    batch = np.zeros((1, 8, 8, 3), np.uint8)
    batch[..., 0] = 255  # red
    x = normalize_batch(batch, spec)
    assert x.shape == (1, 3, 8, 8) and x.dtype == np.float32
    assert (x[0, 2] == 1.0).all() and (x[0, 0] == 0.0).all()  # red lands in the last channel for BGR


def test_a_channels_last_batch_holds_the_same_values_laid_out_for_torch():
    import torch

    spec = ModelSpec("r", input_size=(8, 8), mean=(0.5, 0.4, 0.3), std=(0.2, 0.3, 0.4), channel_order="BGR")
    batch = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    plain, nhwc = normalize_batch(batch, spec), normalize_batch(batch, spec, channels_last=True)
    assert plain.flags["C_CONTIGUOUS"] and np.array_equal(plain, nhwc)
    assert torch.from_numpy(nhwc).is_contiguous(memory_format=torch.channels_last)
    # the arithmetic of earlier releases, bit for bit: (x / 255 - mean) / std in float32
    x = batch[..., ::-1].astype(np.float32) / 255.0
    expected = ((x - np.float32([0.5, 0.4, 0.3])) / np.float32([0.2, 0.3, 0.4])).transpose(0, 3, 1, 2)
    assert np.array_equal(plain, expected)


def test_a_flat_picture_is_no_face_for_a_box_crop_model(tmp_path):
    """A box-crop model has no detector to say "no face": a blank grey frame was ingested as someone's face."""
    from embedder.sources import decode_or_skip
    from tests.helpers import png

    (tmp_path / "grey.jpg").write_bytes(encode(Image.new("RGB", (250, 250), (128, 128, 128)), "JPEG", quality=70))
    (tmp_path / "face.png").write_bytes(png(3))
    image, reason = decode_or_skip(str(tmp_path / "grey.jpg"), SPEC)
    assert image is None and "one flat colour" in reason
    image, reason = decode_or_skip(str(tmp_path / "face.png"), SPEC)
    assert image is not None and reason == ""
