"""A depth estimate from the picture alone, no model weights: nearness from classic monocular cues.

Cues, each in 0..1, mixed and then smoothed hard so that displacement never tears an edge:
  * height in frame: the ground nearest the camera sits at the bottom of most photographs;
  * local detail: texture resolves near the lens and washes out with distance;
  * aerial perspective: far things are hazier, paler, less saturated and bluer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_LUMA = (0.2126, 0.7152, 0.0722)


def box_blur(plane: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean over a (2r+1)² window, edges replicated, for a [h, w] tensor."""
    if radius <= 0:
        return plane
    padded = F.pad(plane[None, None], (radius, radius, radius, radius), mode="replicate")
    return F.avg_pool2d(padded, 2 * radius + 1, stride=1)[0, 0]


def _normalise(values: torch.Tensor, low_q: float = 0.02, high_q: float = 0.98) -> torch.Tensor:
    low = torch.quantile(values.flatten(), low_q)
    high = torch.quantile(values.flatten(), high_q)
    return ((values - low) / (high - low).clamp_min(1e-6)).clamp(0.0, 1.0)


def detail_map(rgb: torch.Tensor) -> torch.Tensor:
    """Local contrast in 0..1 for a [3, h, w] image in 0..1."""
    luma = sum(weight * channel for weight, channel in zip(_LUMA, rgb, strict=True))
    assert isinstance(luma, torch.Tensor)
    radius = max(1, min(luma.shape) // 48)
    contrast = box_blur((luma - box_blur(luma, 1)).abs(), radius)
    return _normalise(contrast, 0.0, 0.95)


def estimate_nearness(rgb: torch.Tensor) -> torch.Tensor:
    """Nearness in 0..1 (1 nearest) for a small [3, h, w] image in 0..1; smooth, same size."""
    height, width = rgb.shape[-2:]
    brightest, darkest = rgb.max(dim=0).values, rgb.min(dim=0).values
    saturation = (brightest - darkest) / brightest.clamp_min(1e-3)
    bluish = (rgb[2] - rgb[0]).clamp(0.0, 1.0)
    haze = (0.7 * brightest * (1.0 - saturation) + 0.3 * bluish).clamp(0.0, 1.0)
    low_in_frame = torch.linspace(0.0, 1.0, height, dtype=rgb.dtype, device=rgb.device)[:, None]
    nearness = 0.45 * low_in_frame.expand(height, width) + 0.35 * detail_map(rgb) + 0.2 * (1.0 - haze)
    return _normalise(box_blur(nearness, max(1, min(height, width) // 10)))


def focus_point(rgb: torch.Tensor) -> tuple[float, float]:
    """Where the eye goes: the detail-weighted centre, pulled halfway back to the frame centre (0..1)."""
    height, width = rgb.shape[-2:]
    weight = detail_map(rgb) ** 2 + 1e-6
    ys = torch.linspace(0.0, 1.0, height, dtype=rgb.dtype, device=rgb.device)
    xs = torch.linspace(0.0, 1.0, width, dtype=rgb.dtype, device=rgb.device)
    total = weight.sum()
    fx = float((weight.sum(dim=0) * xs).sum() / total)
    fy = float((weight.sum(dim=1) * ys).sum() / total)
    return 0.5 + 0.5 * (fx - 0.5), 0.5 + 0.5 * (fy - 0.5)
