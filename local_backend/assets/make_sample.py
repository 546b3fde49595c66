"""Paint the bundled sample still: a procedural valley with layered ridges, haze and a near meadow.

Run `python -m local_backend.assets.make_sample` to rewrite `sample.png`. The picture is made here, from
a fixed seed, so the project ships no third-party image; its layered depth shows off the parallax move.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image

WIDTH, HEIGHT = 1024, 576
SEED = 20261121

FloatArray = NDArray[np.float64]


def _ridge(rng: np.random.Generator, width: int, base: float, roughness: float) -> FloatArray:
    """A mountain skyline: a sum of random sines whose amplitude halves with each octave."""
    x = np.linspace(0.0, 1.0, width)
    line = np.full(width, base)
    amplitude = roughness
    for octave in range(6):
        frequency = 1.5 * 2.0**octave
        line += amplitude * np.sin(2 * np.pi * (frequency * x + rng.random()))
        amplitude *= 0.5
    return line


def _sky(yy: FloatArray, xx: FloatArray) -> FloatArray:
    top, horizon = np.array([0.22, 0.42, 0.78]), np.array([0.98, 0.80, 0.62])
    t = np.clip(yy / 0.62, 0.0, 1.0)[..., None] ** 1.4
    sky = top * (1 - t) + horizon * t
    glow = np.exp(-(((xx - 0.7) / 0.09) ** 2 + ((yy - 0.38) / 0.09) ** 2))[..., None]
    lit: FloatArray = np.clip(sky + glow * np.array([0.45, 0.35, 0.2]), 0.0, 1.0)
    return lit


def paint(seed: int = SEED) -> Image.Image:
    """The sample picture for a seed."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float64)
    yy, xx = yy / HEIGHT, xx / WIDTH
    image = _sky(yy, xx)
    haze = np.array([0.86, 0.84, 0.86])
    layers = [  # (skyline height, roughness, colour, haze left in it): far to near
        (0.42, 0.06, np.array([0.40, 0.45, 0.62]), 0.55),
        (0.52, 0.07, np.array([0.28, 0.36, 0.45]), 0.35),
        (0.63, 0.05, np.array([0.18, 0.32, 0.24]), 0.15),
    ]
    for base, roughness, colour, hazed in layers:
        skyline = _ridge(rng, WIDTH, base, roughness)[None, :]
        mask = (yy >= skyline)[..., None]
        shade = (1.0 - 0.25 * np.clip((yy - skyline) / 0.3, 0, 1))[..., None]
        layer = (colour * (1 - hazed) + haze * hazed) * shade
        image = np.where(mask, layer, image)
    image = _meadow(rng, image, yy, xx)
    image = _trees(rng, image, yy, xx)
    pixels = np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, "RGB")


def _meadow(rng: np.random.Generator, image: FloatArray, yy: FloatArray, xx: FloatArray) -> FloatArray:
    """The near ground: grass whose texture coarsens towards the viewer, as a real lens would show it."""
    edge = 0.74 + 0.03 * np.sin(2 * np.pi * (1.3 * xx + 0.2))
    near = np.clip((yy - edge) / (1.0 - edge.min()), 0.0, 1.0)
    blades = np.repeat(np.repeat(rng.random((HEIGHT // 2, WIDTH // 2)), 2, axis=0), 2, axis=1)
    grass = np.array([0.30, 0.52, 0.18]) * (0.75 + 0.35 * (blades * near)[..., None])
    grass = grass * (0.85 + 0.2 * near[..., None])
    return np.where((yy >= edge)[..., None], grass, image)


def _trees(rng: np.random.Generator, image: FloatArray, yy: FloatArray, xx: FloatArray) -> FloatArray:
    """A few dark conifers on the meadow, bigger the nearer they stand."""
    stands = sorted((rng.uniform(0.8, 0.98), rng.uniform(0.05, 0.95)) for _ in range(5))
    for foot, cx in stands:  # far ones first, so nearer trees cover them
        height = 0.25 + 0.5 * (foot - 0.8)
        top = foot - height
        half_width = (yy - top) / height * height * 0.28 * (HEIGHT / WIDTH)
        crown = (yy >= top) & (yy <= foot - 0.03) & (np.abs(xx - cx) <= half_width)
        trunk = (yy > foot - 0.03) & (yy <= foot) & (np.abs(xx - cx) <= 0.004)
        image = np.where(crown[..., None], np.array([0.06, 0.20, 0.10]), image)
        image = np.where(trunk[..., None], np.array([0.25, 0.16, 0.08]), image)
    return image


def main() -> int:
    """Write `sample.png` beside this file."""
    target = Path(__file__).with_name("sample.png")
    paint().save(target, optimize=True)
    print(f"wrote {target} ({target.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
