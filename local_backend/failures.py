"""What a render reports and fails with, in a module without torch: the broker's API process imports
this (through the render scheduler) and torch only once a local job renders."""

from __future__ import annotations

from collections.abc import Callable

import av

ProgressFn = Callable[[float], None]


class RenderCancelled(Exception):
    """The render was cancelled between batches; no output file is left behind."""


# What a render can fail with, beyond a bug: bad input (ImageError, FormatError are ValueErrors), the
# disk (OSError), torch (RuntimeError, a CUDA out-of-memory included), memory, the encoder.
RENDER_FAILURES: tuple[type[Exception], ...] = (
    ValueError,
    OSError,
    RuntimeError,
    MemoryError,
    av.FFmpegError,
)

__all__ = ["RENDER_FAILURES", "ProgressFn", "RenderCancelled"]
