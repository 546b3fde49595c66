"""The source the camera films: the still, cover-cropped to the output's aspect, as YUV planes.

Frames are sampled straight from Y and quarter-size U/V planes (BT.709, limited range): resampling is
linear, so warping YUV equals warping RGB and converting after, and it skips a colour conversion per
frame and half the work on chroma.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from local_backend.depth import estimate_nearness, focus_point

# BT.709 RGB (0..1) -> limited-range Y'CbCr (0..255 scale).
_KR, _KB = 0.2126, 0.0722
_KG = 1.0 - _KR - _KB
MAX_SOURCE_SCALE = 1.6
# Planes carry half a code value: frames are cast to uint8 by truncation, which then rounds. Resampling
# is a weighted mean, so the offset passes through it unchanged.
ROUNDING = 0.5
_ANALYSIS_SIDE = 160  # long side of the thumbnail the depth and focus cues are computed on


@dataclass(frozen=True, slots=True)
class Source:
    """Planes ready to sample, all float32 on the render device."""

    luma: torch.Tensor  # [h, w], 16..235 (+ ROUNDING)
    chroma: torch.Tensor  # [2, h/2, w/2], 16..240 (+ ROUNDING)


@dataclass(frozen=True, slots=True)
class Analysis:
    """What the picture itself says about the scene, in 0..1 coordinates of the cropped frame."""

    nearness: torch.Tensor  # [h, w] small, 1 nearest
    focus: tuple[float, float]  # where a push-in heads


def cover_box(width: int, height: int, aspect: float) -> tuple[float, float, float, float]:
    """The largest centred box of `aspect` (w/h) inside a width x height image: crop, never stretch."""
    if width / height > aspect:
        crop = height * aspect
        return ((width - crop) / 2.0, 0.0, (width + crop) / 2.0, float(height))
    crop = width / aspect
    return (0.0, (height - crop) / 2.0, float(width), (height + crop) / 2.0)


def source_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """Even source dimensions for an output size and the most the camera will magnify."""
    scale = min(max(scale, 1.0), MAX_SOURCE_SCALE)
    return 2 * round(width * scale / 2.0), 2 * round(height * scale / 2.0)


# Rows: Y', Cb, Cr from R, G, B (BT.709), scaled to limited range; one matrix product converts a frame.
_TO_YUV = (
    (219.0 * _KR, 219.0 * _KG, 219.0 * _KB),
    (-112.0 * _KR / (1.0 - _KB), -112.0 * _KG / (1.0 - _KB), 112.0),
    (112.0, -112.0 * _KG / (1.0 - _KR), -112.0 * _KB / (1.0 - _KR)),
)
_YUV_OFFSET = (16.0 + ROUNDING, 128.0 + ROUNDING, 128.0 + ROUNDING)


def rgb_to_yuv(rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[3, h, w] RGB in 0..1 -> luma [h, w] and 2x2-averaged chroma [2, h/2, w/2], 0..255 + ROUNDING."""
    channels, height, width = rgb.shape
    matrix = torch.tensor(_TO_YUV, dtype=rgb.dtype, device=rgb.device)
    offset = torch.tensor(_YUV_OFFSET, dtype=rgb.dtype, device=rgb.device)[:, None]
    yuv = torch.addmm(offset, matrix, rgb.reshape(channels, -1)).view(3, height, width)
    return yuv[0].contiguous(), F.avg_pool2d(yuv[None, 1:], 2)[0]


def _to_rgb_tensor(image: Image.Image, device: torch.device) -> torch.Tensor:
    pixels = torch.from_numpy(np.array(image, dtype=np.uint8)).to(device)
    return pixels.permute(2, 0, 1).float().div_(255.0)


def analyse(image: Image.Image, aspect: float, device: torch.device) -> Analysis:
    """Depth and focus cues from a thumbnail of the crop the camera will film."""
    box = cover_box(image.width, image.height, aspect)
    long_side = _ANALYSIS_SIDE
    size = (
        (long_side, max(8, round(long_side / aspect)))
        if aspect >= 1
        else (max(8, round(long_side * aspect)), long_side)
    )
    thumb = _to_rgb_tensor(image.resize(size, Image.Resampling.BOX, box=box), device)
    return Analysis(nearness=estimate_nearness(thumb), focus=focus_point(thumb))


def prepare_source(image: Image.Image, width: int, height: int, scale: float, device: torch.device) -> Source:
    """Cover-crop and resize the still once, with a margin of `scale` for the camera's magnification."""
    box = cover_box(image.width, image.height, width / height)
    size = source_size(width, height, scale)
    # One resample from the crop box: Lanczos keeps detail whether it shrinks or enlarges.
    resized = image.resize(size, Image.Resampling.LANCZOS, box=box, reducing_gap=3.0)
    luma, chroma = rgb_to_yuv(_to_rgb_tensor(resized, device))
    return Source(luma=luma.contiguous(), chroma=chroma.contiguous())
