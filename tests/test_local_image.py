"""Image decoding for the local backend: what is refused, with which machine code, and what is kept."""

from __future__ import annotations

import io
from collections.abc import Callable

import pytest
from PIL import Image

from local_backend.assets import SAMPLE_IMAGE
from local_backend.image import (
    IMAGE_TOO_LARGE,
    INVALID_IMAGE,
    ImageError,
    decode_image,
    probe_image,
)
from tests.support.images import png_header_only


def _encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    return Image.open(SAMPLE_IMAGE).convert("RGB")


def test_the_bundled_sample_is_a_small_png_the_backend_accepts() -> None:
    data = SAMPLE_IMAGE.read_bytes()
    assert len(data) < 200 * 1024
    info = probe_image(data)
    assert (info.format, info.width, info.height, info.content_type) == ("PNG", 1024, 576, "image/png")


@pytest.mark.parametrize("decode", [probe_image, decode_image])
@pytest.mark.parametrize("data", [b"", b"%PDF-1.7 not a picture at all" * 4, b"GIF89a" + b"\0" * 3])
def test_bytes_that_are_not_an_image_are_invalid(decode: Callable[[bytes], object], data: bytes) -> None:
    with pytest.raises(ImageError) as caught:
        decode(data)
    assert caught.value.code == INVALID_IMAGE


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
@pytest.mark.parametrize("decode", [probe_image, decode_image])
def test_a_truncated_file_is_invalid(photo: Image.Image, fmt: str, decode: Callable[[bytes], object]) -> None:
    whole = _encoded(photo, fmt)
    with pytest.raises(ImageError) as caught:
        decode(whole[: len(whole) * 2 // 3])
    assert caught.value.code == INVALID_IMAGE
    assert "truncated" in caught.value.message


@pytest.mark.parametrize("side", [12_000, 60_000])
@pytest.mark.parametrize("decode", [probe_image, decode_image])
def test_a_decompression_bomb_is_refused_from_its_header(
    side: int, decode: Callable[[bytes], object]
) -> None:
    # 60000² is beyond even Pillow's own hard limit; 12000² only beyond ours.
    with pytest.raises(ImageError) as caught:
        decode(png_header_only(side, side))
    assert caught.value.code == IMAGE_TOO_LARGE


def test_the_pixel_limit_is_the_callers(photo: Image.Image) -> None:
    data = _encoded(photo, "PNG")
    assert probe_image(data, max_pixels=1024 * 576).width == 1024
    with pytest.raises(ImageError) as caught:
        probe_image(data, max_pixels=1024 * 576 - 1)
    assert caught.value.code == IMAGE_TOO_LARGE


def test_a_tiny_image_is_invalid() -> None:
    with pytest.raises(ImageError) as caught:
        decode_image(_encoded(Image.new("RGB", (8, 300)), "PNG"))
    assert caught.value.code == INVALID_IMAGE


def test_an_unsupported_format_is_invalid(photo: Image.Image) -> None:
    with pytest.raises(ImageError) as caught:
        probe_image(_encoded(photo, "TIFF"))
    assert caught.value.code == INVALID_IMAGE


def test_decoding_gives_upright_rgb_with_transparency_over_white() -> None:
    rgba = Image.new("RGBA", (40, 20), (255, 0, 0, 0))
    rgba.paste((0, 0, 255, 255), (0, 0, 20, 20))
    decoded = decode_image(_encoded(rgba, "PNG"))
    assert decoded.mode == "RGB"
    assert decoded.getpixel((5, 5)) == (0, 0, 255)
    assert decoded.getpixel((35, 5)) == (255, 255, 255)


def test_exif_orientation_is_applied(photo: Image.Image) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90° clockwise to view
    data = _encoded(photo.resize((64, 32)), "JPEG", exif=exif)
    assert decode_image(data).size == (32, 64)
