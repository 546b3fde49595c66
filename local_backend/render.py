"""Frames from a source and a camera path, rendered in batches straight into YUV 4:2:0 bytes.

Moves without depth (push, pull, pan, tilt) map the output to the source by a per-frame scale and
offset, which is separable: each frame is two 1-D gathers and lerps, the cheapest bilinear there is.
Orbit and parallax move pixels along x only, by shift times depth: rows stay separable and only the
horizontal pass gathers per pixel. The locked camera's ambient motion moves pixels both ways: it
builds a sampling grid as one small matrix product per batch, coefficients per frame times fixed
coordinate maps, and samples it with `grid_sample`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from local_backend.motion import CameraPath
from local_backend.source import Source

# A warped batch reads every coordinate map once for all its frames: about 12 MP of frames per batch
# measured best on 2 cores (6 at 1080p), fewer than 4 wastes the maps, more than 8 spills the cache.
_PIXELS_PER_BATCH = 12_500_000
_TILE_FLOATS = 160_000  # a band of rows per buffer that, with its three siblings, fits a core's L2 cache
_AMBIENT_WAVES = 3
_AMBIENT_AMPLITUDE = 0.004  # of the short side: a few pixels of drift, no more


def batch_size(width: int, height: int) -> int:
    """Frames per batch: enough to amortise the per-batch work, small enough to stay in cache and RAM."""
    return max(4, min(8, _PIXELS_PER_BATCH // (width * height)))


def _separable_coords(
    path: CameraPath, frames: slice, out_size: int, src_size: int, axis: str, clamp: bool = True
) -> torch.Tensor:
    """Source pixel coordinates [B, out_size] along one axis for each frame in the slice."""
    centre = (path.cx if axis == "x" else path.cy)[frames]
    zoom = path.zoom[frames]
    unit = (torch.arange(out_size, dtype=torch.float64) + 0.5) / out_size - 0.5
    coords = (centre[:, None] + unit[None, :] / zoom[:, None]) * src_size - 0.5
    return coords.clamp(0.0, src_size - 1.0) if clamp else coords


def _lerp_taps(coords: torch.Tensor, size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    low = coords.floor().clamp(max=size - 2)
    weight = (coords - low).to(device=device, dtype=torch.float32)
    return low.to(device=device, dtype=torch.long), weight


class FrameRenderer:
    """Renders frames of one clip; `render(start, stop)` returns YUV 4:2:0 bytes [B, h*3/2, w]."""

    def __init__(
        self, source: Source, path: CameraPath, width: int, height: int, nearness: torch.Tensor, seed: int
    ) -> None:
        self.source, self.path = source, path
        self.width, self.height = width, height
        self.device = source.luma.device
        self._depth = bool(path.shift.abs().max() > 0)
        self._ambient = _ambient_waves(seed) if path.ambient.abs().max() > 0 else None
        self.warped = self._ambient is not None
        self._luma_maps: torch.Tensor | None = None
        self._chroma_maps: torch.Tensor | None = None
        self._luma_depth: torch.Tensor | None = None
        self._chroma_depth: torch.Tensor | None = None
        if self.warped:
            self._luma_maps = self._maps(width, height, nearness)
            self._chroma_maps = self._maps(width // 2, height // 2, nearness)
        elif self._depth:
            # Depth moves displace along x only: rows stay separable, columns move pixel by pixel.
            pivot = self.path.depth_pivot
            self._luma_depth = (self._nearness_on_screen(nearness, width, height) - pivot).to(self.device)
            chroma_depth = self._nearness_on_screen(nearness, width // 2, height // 2) - pivot
            self._chroma_depth = torch.cat([chroma_depth, chroma_depth]).to(self.device)

    def render(self, start: int, stop: int) -> torch.Tensor:
        """Frames [start, stop) as uint8 [B, h*3/2, w] on the CPU, Y then U then V per frame."""
        frames = slice(start, stop)
        count = stop - start
        w, h = self.width, self.height
        area, quarter = w * h, (w // 2) * (h // 2)
        out = torch.empty(count, area + 2 * quarter, dtype=torch.uint8, device=self.device)
        luma_out = out[:, :area].view(count, h, w)
        # U sits right above V in each frame's bytes, as the source stacks them: one plane to sample.
        chroma_out = out[:, area:].view(count, 2, h // 2, w // 2)
        if self.warped:
            luma_maps, chroma_maps = self._luma_maps, self._chroma_maps
            assert luma_maps is not None and chroma_maps is not None
            coefficients = self._coefficients(frames)
            luma_out.copy_(self._warp(self.source.luma[None], coefficients, luma_maps, h, w)[0])
            chroma = self._warp(self.source.chroma, coefficients, chroma_maps, h // 2, w // 2)
            chroma_out.copy_(chroma.transpose(0, 1))
        else:
            self._separable(self.source.luma[None], luma_out[:, None], frames, self._luma_depth)
            self._separable(self.source.chroma, chroma_out, frames, self._chroma_depth)
        return out.view(count, h * 3 // 2, w).cpu()

    def _separable(
        self, planes: torch.Tensor, out: torch.Tensor, frames: slice, depth: torch.Tensor | None = None
    ) -> None:
        """Scale and offset [C, h, w] planes into `out` [B, C, h', w']: two 1-D lerps per frame.

        The planes are handled as one 2-D stack ([C*h, w], rows of plane c offset by c*h): torch's
        fast gathers are 2-D, and the work goes in bands of rows small enough to stay in cache. With
        `depth` ([C*h', w'] nearness minus pivot), each pixel's column also moves by shift * depth.
        """
        channels, src_h, src_w = planes.shape
        out_h, out_w = out.shape[2:]
        stack = planes.view(channels * src_h, src_w)
        ys, wy = _lerp_taps(_separable_coords(self.path, frames, out_h, src_h, "y"), src_h, self.device)
        offsets = (torch.arange(channels, device=self.device) * src_h)[:, None]
        ys = (ys[:, None, :] + offsets).flatten(1)
        wy = wy.repeat(1, channels)[:, :, None]
        columns = _ColumnPlan(self.path, frames, out_w, src_w, depth, self.device)
        tile = max(8, _TILE_FLOATS // src_w)
        scratch = _Scratch(tile, src_w, out_w, self.device)
        for index in range(ys.shape[0]):
            # Only the columns this frame reads go through the vertical pass.
            first, last = columns.span(index)
            band = stack[:, first:last]
            target = out[index].view(channels * out_h, out_w)
            for start in range(0, channels * out_h, tile):
                upper = scratch.rows(band, ys[index, start : start + tile], wy[index, start : start + tile])
                columns.sample(
                    scratch, upper, index, first, slice(start, start + tile), target[start : start + tile]
                )

    @staticmethod
    def _warp(
        planes: torch.Tensor, coefficients: torch.Tensor, maps: torch.Tensor, out_h: int, out_w: int
    ) -> torch.Tensor:
        """Sample [C, h, w] planes on this batch's grids: [C, B, out_h, out_w]."""
        count = coefficients.shape[0]
        # The maps hold (x, y) pairs already interleaved, so the product is grid_sample's layout, and
        # all frames of the batch share one source: their grids stack down the height, one call.
        grid = (coefficients @ maps).view(1, count * out_h, out_w, 2)
        sampled = F.grid_sample(
            planes[None], grid, mode="bilinear", padding_mode="border", align_corners=False
        )
        return sampled[0].view(planes.shape[0], count, out_h, out_w)

    def _coefficients(self, frames: slice) -> torch.Tensor:
        """Per-frame weights [B, k] of the coordinate maps, in grid_sample's -1..1 units."""
        path = self.path
        zoom = path.zoom[frames]
        weights = [2.0 / zoom, 2.0 / zoom, 2.0 * path.cx[frames] - 1.0, 2.0 * path.cy[frames] - 1.0]
        if self._depth:
            weights.append(2.0 * path.shift[frames])
        if self._ambient is not None:
            for speed in self._ambient.speeds:
                phase = 2.0 * math.pi * speed * path.ambient[frames]
                weights += [torch.cos(phase), torch.sin(phase)]
        return torch.stack(weights, dim=1).to(self.device, torch.float32)

    def _maps(self, width: int, height: int, nearness: torch.Tensor) -> torch.Tensor:
        """Coordinate maps [k, h*w*2] of (x, y) pairs: x, y, ones for each, depth, ambient waves."""
        u = ((torch.arange(width, dtype=torch.float32) + 0.5) / width - 0.5)[None, :]
        v = ((torch.arange(height, dtype=torch.float32) + 0.5) / height - 0.5)[:, None]
        pairs: list[tuple[torch.Tensor | float, torch.Tensor | float]] = [
            (u, 0.0),
            (0.0, v),
            (1.0, 0.0),
            (0.0, 1.0),
        ]
        if self._depth:
            pairs.append((self._nearness_on_screen(nearness, width, height) - self.path.depth_pivot, 0.0))
        waves = self._ambient.maps(width, height) if self._ambient is not None else iter(())
        count = len(pairs) + (2 * len(self._ambient.speeds) if self._ambient is not None else 0)
        # Filled in place, one map at a time: at 1080p each map is 16 MB, so no stacking of copies.
        maps = torch.empty(count, height, width, 2)
        for index, (x, y) in enumerate(itertools.chain(pairs, waves)):
            maps[index, ..., 0] = x
            maps[index, ..., 1] = y
        return maps.view(count, -1).to(self.device)

    def _nearness_on_screen(self, nearness: torch.Tensor, width: int, height: int) -> torch.Tensor:
        """The depth map as the mid-clip frame sees it; the window barely moves in a depth move."""
        middle = self.path.frames // 2
        zoom = float(self.path.zoom[middle])
        u = (torch.arange(width, dtype=torch.float32) + 0.5) / width - 0.5
        v = (torch.arange(height, dtype=torch.float32) + 0.5) / height - 0.5
        gx = (2.0 * float(self.path.cx[middle]) - 1.0 + 2.0 * u / zoom)[None, :].expand(height, width)
        gy = (2.0 * float(self.path.cy[middle]) - 1.0 + 2.0 * v / zoom)[:, None].expand(height, width)
        grid = torch.stack([gx, gy], dim=-1)[None]
        small = nearness.float().cpu()[None, None]
        return F.grid_sample(small, grid, mode="bilinear", padding_mode="border", align_corners=False)[0, 0]


class _ColumnPlan:
    """Where each frame's output columns read from: one coordinate per column, or per pixel in depth."""

    def __init__(
        self,
        path: CameraPath,
        frames: slice,
        out_w: int,
        src_w: int,
        depth: torch.Tensor | None,
        device: torch.device,
    ) -> None:
        self.src_w, self.depth, self.device = src_w, depth, device
        self.centres = _separable_coords(path, frames, out_w, src_w, "x", clamp=depth is None)
        self.taps = _lerp_taps(self.centres, src_w, device)
        self.shifts = (path.shift[frames] * src_w).tolist()
        self.reach = float(depth.abs().max()) if depth is not None else 0.0

    def span(self, index: int) -> tuple[int, int]:
        """The source columns [first, last) frame `index` reads (coordinates increase along a row)."""
        spread = abs(self.shifts[index]) * self.reach
        first = max(0, math.floor(float(self.centres[index, 0]) - spread))
        last = min(self.src_w, math.floor(float(self.centres[index, -1]) + spread) + 2)
        return first, max(last, first + 2)

    def sample(
        self, scratch: _Scratch, upper: torch.Tensor, index: int, first: int, rows: slice, out: torch.Tensor
    ) -> None:
        """Write the horizontal pass of one tile of rows (already resampled vertically) into `out`."""
        if self.depth is None:
            left, across = self.taps[0][index] - first, self.taps[1][index]
            scratch.columns(upper, left, across, out)
            return
        base = (self.centres[index] - first).to(self.device, torch.float32)
        scratch.displaced(upper, base, self.shifts[index], self.depth[rows], out)


class _Scratch:
    """Reused buffers for one tile of rows: the cache-sized working set of a separable resample."""

    def __init__(self, rows: int, src_w: int, out_w: int, device: torch.device) -> None:
        self._top = torch.empty(rows * src_w, device=device)
        self._bottom = torch.empty(rows * src_w, device=device)
        self._left = torch.empty(rows, out_w, device=device)
        self._right = torch.empty(rows, out_w, device=device)
        self._where = torch.empty(rows, out_w, device=device)
        self._floor = torch.empty(rows, out_w, device=device)
        self._index = torch.empty(rows, out_w, dtype=torch.long, device=device)

    def rows(self, band: torch.Tensor, top: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
        """The vertical pass: rows `top` and `top + 1` of `band`, mixed by `down` [n, 1]."""
        count, width = top.shape[0], band.shape[1]
        upper = self._top[: count * width].view(count, width)
        lower = self._bottom[: count * width].view(count, width)
        torch.index_select(band, 0, top, out=upper)
        torch.index_select(band, 0, top + 1, out=lower)
        return upper.lerp_(lower, down)

    def columns(
        self, upper: torch.Tensor, left: torch.Tensor, across: torch.Tensor, out: torch.Tensor
    ) -> None:
        """The horizontal pass at one coordinate per column (cast to `out` by truncation)."""
        count = upper.shape[0]
        west, east = self._left[:count], self._right[:count]
        torch.index_select(upper, 1, left, out=west)
        torch.index_select(upper, 1, left + 1, out=east)
        out.copy_(west.lerp_(east, across))

    def displaced(
        self, upper: torch.Tensor, base: torch.Tensor, shift: float, depth: torch.Tensor, out: torch.Tensor
    ) -> None:
        """The horizontal pass with each pixel's column moved by `shift` * its depth."""
        count, width = upper.shape
        where = torch.add(base, depth, alpha=shift, out=self._where[:count]).clamp_(0.0, width - 1.0)
        low = torch.floor(where, out=self._floor[:count]).clamp_(max=width - 2.0)
        index = self._index[:count]
        index.copy_(low)
        west = torch.gather(upper, 1, index, out=self._left[:count])
        east = torch.gather(upper, 1, index.add_(1), out=self._right[:count])
        out.copy_(west.lerp_(east, where.sub_(low)))


@dataclass(frozen=True, slots=True)
class _AmbientWaves:
    """A few slow travelling waves of displacement, seeded; edges stay locked to the frame."""

    angles: tuple[float, ...]
    frequencies: tuple[float, ...]
    phases: tuple[float, ...]
    speeds: tuple[float, ...]
    amplitudes: tuple[float, ...]

    def maps(self, width: int, height: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Per wave, its sin and cos maps of (x, y) displacement in grid units."""
        short = min(width, height)
        x = (torch.arange(width, dtype=torch.float32) + 0.5) / short
        y = (torch.arange(height, dtype=torch.float32) + 0.5) / short
        yy, xx = torch.meshgrid(y, x, indexing="ij")
        # sqrt(sin) falls to zero only at the border: the frame's edges never move.
        window = (torch.sin(math.pi * xx * short / width) * torch.sin(math.pi * yy * short / height)).sqrt()
        for angle, freq, phase, amp in zip(
            self.angles, self.frequencies, self.phases, self.amplitudes, strict=True
        ):
            spatial = 2.0 * math.pi * freq * (math.cos(angle) * xx + math.sin(angle) * yy) + phase
            # Displace across the wave front, like wind through grass; grid units are 2 per frame side.
            scale_x = -2.0 * amp * short / width * math.sin(angle)
            scale_y = 2.0 * amp * short / height * math.cos(angle)
            # sin(P + wt) = sin P cos wt + cos P sin wt: the frame's (cos wt, sin wt) weight these maps.
            sine = torch.sin(spatial).mul_(window)
            yield sine * scale_x, sine * scale_y
            cosine = torch.cos(spatial).mul_(window)
            yield cosine * scale_x, cosine * scale_y


def _ambient_waves(seed: int) -> _AmbientWaves:
    rng = torch.Generator().manual_seed(seed ^ 0x5EED)
    draws = torch.rand(5, _AMBIENT_WAVES, generator=rng, dtype=torch.float64).tolist()
    return _AmbientWaves(
        angles=tuple(2.0 * math.pi * a for a in draws[0]),
        frequencies=tuple(1.0 + 2.0 * f for f in draws[1]),
        phases=tuple(2.0 * math.pi * p for p in draws[2]),
        speeds=tuple(0.5 + s for s in draws[3]),
        amplitudes=tuple(_AMBIENT_AMPLITUDE * (0.5 + a) / _AMBIENT_WAVES for a in draws[4]),
    )
