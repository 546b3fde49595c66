"""Decoding the input still with Pillow, refusing what is not a usable image.

Every refusal is an `ImageError` whose `code` is a machine code the API maps to a 4xx:
`invalid_image` (not an image, an unsupported format, truncated or corrupt, too small) or
`image_too_large` (more pixels than allowed: a decompression bomb is refused from its header alone,
before anything is decompressed).
"""

from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass
from typing import Final

from PIL import Image, ImageOps

INVALID_IMAGE: Final = "invalid_image"
IMAGE_TOO_LARGE: Final = "image_too_large"

DEFAULT_MAX_PIXELS = 40_000_000  # a 40 MP photo decodes to ~120 MB of RGB: the most one render holds
MIN_SIDE = 16
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP")


class ImageError(ValueError):
    """The bytes are not an image this backend accepts; `code` says why, for the caller."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class ImageInfo:
    width: int
    height: int
    format: str  # Pillow's name: "JPEG", "PNG", ...

    @property
    def content_type(self) -> str:
        return Image.MIME.get(self.format, "application/octet-stream")


def probe_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageInfo:
    """Check an upload cheaply: a known format, sane dimensions, every byte of it present."""
    with _open(data, max_pixels) as image:
        info = ImageInfo(image.width, image.height, str(image.format))
        try:
            if info.format == "PNG":
                # verify() walks every chunk and its CRC without decompressing the pixels.
                image.verify()
            else:
                # A JPEG decodes at 1/8 scale in draft mode: the whole stream is read, little is built.
                image.draft("RGB", (max(1, image.width // 8), max(1, image.height // 8)))
                image.load()
        except (OSError, SyntaxError, ValueError, struct.error) as exc:
            raise ImageError(INVALID_IMAGE, f"the {info.format} image is corrupt or truncated") from exc
    return info


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode fully into an upright RGB image; ImageError if the bytes are not a whole, sane image."""
    with _open(data, max_pixels) as image:
        try:
            image.load()
            upright = ImageOps.exif_transpose(image)
        except (OSError, SyntaxError, ValueError, struct.error) as exc:
            raise ImageError(INVALID_IMAGE, f"the {image.format} image is corrupt or truncated") from exc
        return _to_rgb(upright)


def _open(data: bytes, max_pixels: int) -> Image.Image:
    if not data:
        raise ImageError(INVALID_IMAGE, "the image is empty")
    try:
        with warnings.catch_warnings():
            # Pillow's own bomb check is a process-wide setting; ours below uses the caller's limit.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=FORMATS)
    except Image.DecompressionBombError as exc:
        raise ImageError(IMAGE_TOO_LARGE, f"the image has too many pixels (limit {max_pixels})") from exc
    except (OSError, SyntaxError, ValueError, struct.error) as exc:
        raise ImageError(INVALID_IMAGE, f"not an image in a supported format ({', '.join(FORMATS)})") from exc
    width, height = image.size
    if width * height > max_pixels:
        image.close()
        raise ImageError(
            IMAGE_TOO_LARGE, f"the image is {width}x{height}, more than the {max_pixels} pixels allowed"
        )
    if min(width, height) < MIN_SIDE:
        image.close()
        raise ImageError(INVALID_IMAGE, f"the image is {width}x{height}; each side needs {MIN_SIDE}+ px")
    return image


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB pixels; transparency is laid over white, as a viewer would show a transparent PNG."""
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return image.convert("RGB")
