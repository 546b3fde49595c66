"""Image inputs: fetching an `image_url` safely, checking image bytes, and shaping them per provider.

`fetch_image()` goes only where the outbound policy (`adapters.outbound`) lets it: the host is
resolved and every address checked before the request, and again on connect. Redirects are followed
by hand, each target checked again. The body is capped and must decode as an image of sane dimensions.

`image_infeasibility()` is pure: the quote uses it to mark a route infeasible when its provider
cannot take the job's image in any form the broker can give (for example a URL-only provider and an
uploaded file), so such a job never fails at submit time.
"""

from __future__ import annotations

import base64
import io
import warnings
from dataclasses import dataclass, field
from urllib.parse import urljoin

import aiohttp
from PIL import Image, UnidentifiedImageError

from adapters.base import ImageAcceptance, ImageInput
from adapters.errors import Rejected
from adapters.outbound import OutboundPolicy, OutboundRefused
from broker.schema import BrokerError, ErrorCode

IMAGE_MAX_BYTES = 20 * 1024 * 1024
IMAGE_MAX_PIXELS = 40_000_000
IMAGE_MIN_SIDE = 16
IMAGE_MAX_SIDE = 8192
MAX_REDIRECTS = 3
_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif"}
_DATA_URI_PREFIX_BYTES = len("data:image/jpeg;base64,")


class InvalidImage(BrokerError):
    code = ErrorCode.INVALID_IMAGE


class ImageTooLarge(BrokerError):
    code = ErrorCode.IMAGE_TOO_LARGE


class ImageFetchFailed(BrokerError):
    code = ErrorCode.IMAGE_FETCH_FAILED


@dataclass(frozen=True, slots=True)
class CheckedImage:
    content_type: str
    width: int
    height: int


def check_image(data: bytes, *, max_pixels: int = IMAGE_MAX_PIXELS) -> CheckedImage:
    """Decode the header and verify `data` is a JPEG/PNG/WebP/GIF of sane size; `InvalidImage` if not."""
    with warnings.catch_warnings():
        # Pillow warns (not raises) on very large images; a warning here means refuse.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as image:
                fmt, (width, height) = image.format, image.size
                if width * height > max_pixels:
                    raise InvalidImage(f"image has {width}x{height} pixels, more than {max_pixels}")
                image.verify()
        except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise InvalidImage("the bytes are not a readable image") from exc
        except (OSError, SyntaxError, ValueError) as exc:
            raise InvalidImage("the image is truncated or corrupt") from exc
    if fmt not in _FORMATS:
        raise InvalidImage(f"image format {fmt} is not one of {', '.join(sorted(_FORMATS))}")
    if min(width, height) < IMAGE_MIN_SIDE or max(width, height) > IMAGE_MAX_SIDE:
        raise InvalidImage(
            f"image is {width}x{height}; each side must be {IMAGE_MIN_SIDE}..{IMAGE_MAX_SIDE} pixels"
        )
    return CheckedImage(_FORMATS[fmt], width, height)


def data_uri_size(size_bytes: int) -> int:
    """The length of a base64 `data:` URI holding `size_bytes` bytes."""
    return _DATA_URI_PREFIX_BYTES + 4 * ((size_bytes + 2) // 3)


def to_data_uri(image: ImageInput) -> str:
    """The image's bytes as a `data:<type>;base64,` URI."""
    if image.data is None:
        raise ValueError("the image has no bytes to encode")
    return f"data:{image.content_type};base64,{base64.b64encode(image.data).decode('ascii')}"


def image_infeasibility(
    acceptance: ImageAcceptance, has_url: bool, has_bytes: bool, size_bytes: int | None
) -> str | None:
    """Why a provider can't take this job's image, or None if it can (or the job has no image)."""
    if not has_url and not has_bytes:
        return None
    if has_url and acceptance.url:
        return None
    takes_bytes = acceptance.data_uri_max_bytes is not None or acceptance.file_max_bytes is not None
    if not takes_bytes:
        return "provider takes the image only as an https URL, and the job's image is bytes"
    if size_bytes is None:
        # The bytes are fetched from the job's URL at submit time and checked against the cap then.
        return None
    if acceptance.file_max_bytes is not None and size_bytes <= acceptance.file_max_bytes:
        return None
    uri_cap = acceptance.data_uri_max_bytes
    if uri_cap is not None and data_uri_size(size_bytes) <= uri_cap:
        return None
    cap = max(acceptance.file_max_bytes or 0, uri_cap or 0)
    return f"image of {size_bytes} bytes is over the provider's {cap}-byte limit"


def image_reference(image: ImageInput, acceptance: ImageAcceptance, provider: str) -> str:
    """The image as a provider that reads a URL field takes it: its https URL, else a data URI."""
    if image.url is not None and acceptance.url:
        return image.url
    cap = acceptance.data_uri_max_bytes
    if image.data is not None and cap is not None and data_uri_size(len(image.data)) <= cap:
        return to_data_uri(image)
    reason = image_infeasibility(
        acceptance,
        image.url is not None,
        image.data is not None,
        None if image.data is None else len(image.data),
    )
    raise Rejected(reason or f"{provider} cannot take this image", provider=provider)


async def image_with_bytes(image: ImageInput, policy: FetchPolicy | None = None) -> ImageInput:
    """The image with its bytes in hand: as given, or fetched (safely) from its URL."""
    if image.data is not None:
        return image
    if image.url is None:
        raise InvalidImage("the image has neither bytes nor a URL")
    return await fetch_image(image.url, policy)


@dataclass(frozen=True, slots=True)
class FetchPolicy:
    """How `fetch_image` fetches: where it may go (`outbound`), and how much it takes."""

    outbound: OutboundPolicy = field(default_factory=OutboundPolicy)
    max_bytes: int = IMAGE_MAX_BYTES
    max_pixels: int = IMAGE_MAX_PIXELS
    timeout_s: float = 20.0
    headers: dict[str, str] = field(default_factory=lambda: {"Accept": "image/*"})


async def fetch_image(url: str, policy: FetchPolicy | None = None) -> ImageInput:
    """Download an image URL, every hop checked by the outbound policy before the request and again on
    connect (through a session the policy guards); the result keeps the URL too."""
    policy = policy or FetchPolicy()
    target = url
    async with policy.outbound.open_session() as session:
        for _ in range(MAX_REDIRECTS + 1):
            try:
                await policy.outbound.check(target)
            except OutboundRefused as exc:
                raise ImageFetchFailed(f"image URL {exc}") from None
            location, data = await _get(session, target, policy)
            if location is None:
                checked = check_image(data, max_pixels=policy.max_pixels)
                return ImageInput(content_type=checked.content_type, data=data, url=url)
            target = urljoin(target, location)
    raise ImageFetchFailed(f"image URL redirects more than {MAX_REDIRECTS} times")


async def _get(session: aiohttp.ClientSession, url: str, policy: FetchPolicy) -> tuple[str | None, bytes]:
    """GET `url`; (Location, b"") on a redirect, else (None, body)."""
    try:
        async with session.get(
            url,
            headers=policy.headers,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=policy.timeout_s),
        ) as response:
            if response.status in (301, 302, 303, 307, 308) and "Location" in response.headers:
                return response.headers["Location"], b""
            if response.status != 200:
                raise ImageFetchFailed(f"image URL answered HTTP {response.status}")
            declared = response.content_length
            if declared is not None and declared > policy.max_bytes:
                raise ImageTooLarge(f"image is larger than {policy.max_bytes} bytes")
            return None, await _read_limited(response, policy.max_bytes)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise ImageFetchFailed(f"could not download the image ({type(exc).__name__})") from exc


async def _read_limited(response: aiohttp.ClientResponse, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise ImageTooLarge(f"image is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
