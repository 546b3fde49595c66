"""Output formats: frame sizes for every aspect ratio and resolution, the frame rate, and render speed.

Keys are the schema's string values ("16:9", "720p"); this package must not import `broker`.
"""

from __future__ import annotations

FPS = 24
MIN_DURATION_S = 1
MAX_DURATION_S = 10

_SHORT_SIDE = {"720p": 720, "1080p": 1080}
# (width, height) per short side of 1; 21:9 is rounded to an even width the encoder likes (7:3).
_ASPECT = {"16:9": (16, 9), "9:16": (9, 16), "1:1": (1, 1), "4:3": (4, 3), "3:4": (3, 4), "21:9": (21, 9)}

ASPECT_RATIOS = tuple(_ASPECT)
RESOLUTIONS = tuple(_SHORT_SIDE)

# Measured wall seconds of rendering per second of output on the reference 2-core CPU (see
# bench/local_backend.py); used for estimates before a run, never for billing.
EXPECTED_COMPUTE_S_PER_OUTPUT_S = {"720p": 0.2, "1080p": 0.5}


class FormatError(ValueError):
    """An aspect ratio, resolution or duration this backend does not render."""


def frame_size(aspect_ratio: str, resolution: str) -> tuple[int, int]:
    """(width, height) in pixels: the short side is the resolution's height, both sides even."""
    if aspect_ratio not in _ASPECT:
        raise FormatError(f"unsupported aspect ratio {aspect_ratio!r}; use one of {', '.join(_ASPECT)}")
    if resolution not in _SHORT_SIDE:
        raise FormatError(f"unsupported resolution {resolution!r}; use one of {', '.join(_SHORT_SIDE)}")
    short = _SHORT_SIDE[resolution]
    across, down = _ASPECT[aspect_ratio]
    if across >= down:
        return _even(short * across / down), short
    return short, _even(short * down / across)


def frame_count(duration_s: int) -> int:
    """Frames in a clip of `duration_s` seconds."""
    if not MIN_DURATION_S <= duration_s <= MAX_DURATION_S:
        raise FormatError(f"duration must be {MIN_DURATION_S}-{MAX_DURATION_S} s, got {duration_s}")
    return FPS * duration_s


def expected_render_seconds(duration_s: int, resolution: str) -> float:
    """How long a render should take on the CPU, from the measured speed table."""
    return (
        EXPECTED_COMPUTE_S_PER_OUTPUT_S.get(resolution, max(EXPECTED_COMPUTE_S_PER_OUTPUT_S.values()))
        * duration_s
    )


def _even(value: float) -> int:
    return round(value / 2.0) * 2
