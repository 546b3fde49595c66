"""Camera moves: which one a prompt asks for, and the eased path the virtual camera takes.

A path gives, per frame, the window of the source the camera sees (`zoom`, centre `cx`, `cy`, in
source-normalised units) and, for the depth moves, a horizontal `shift` that displaces each pixel in
proportion to its nearness. `ambient` drives the subtle in-frame motion of a locked camera.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import StrEnum

import torch


class Motion(StrEnum):
    PUSH_IN = "push_in"
    PULL_OUT = "pull_out"
    PAN_LEFT = "pan_left"
    PAN_RIGHT = "pan_right"
    TILT_UP = "tilt_up"
    TILT_DOWN = "tilt_down"
    ORBIT = "orbit"
    PARALLAX = "parallax"
    STATIC = "static"

    @property
    def uses_depth(self) -> bool:
        """Moves that displace near and far parts differently, so need the depth estimate."""
        return self in (Motion.ORBIT, Motion.PARALLAX)


DEFAULT_MOTION = Motion.PUSH_IN

# The earliest mention in the prompt wins; at one position the longer phrase ("zoom out" over
# "zoom"), then the earlier entry.
_PATTERNS: tuple[tuple[Motion, str], ...] = (
    (
        Motion.STATIC,
        r"static|still camera|locked(?:[- ]off)?|tripod|fixed camera|no camera (?:movement|motion)",
    ),
    (
        Motion.PULL_OUT,
        r"(?:zoom|zooms|zooming|pull|pulls|pulling|dolly|dollies|push|pushes)[- ]?(?:out|back)|"
        r"reveal|wide(?:ns|ning)? out",
    ),
    (
        Motion.PUSH_IN,
        r"(?:zoom|zooms|zooming|push|pushes|pushing|dolly|dollies|move|moves|moving)[- ]?in(?:to)?\b|"
        r"close[- ]?up|closer|zoom(?:s|ing)?|push(?:es|ing)?|dolly",
    ),
    (Motion.PAN_LEFT, r"pan(?:s|ning)?(?: to(?: the)?)? left|truck(?:s|ing)? left"),
    (Motion.PAN_RIGHT, r"pan(?:s|ning)?(?: to(?: the)?)? right|truck(?:s|ing)? right|pan(?:s|ning|oramic)?"),
    (Motion.TILT_UP, r"tilt(?:s|ing)? up|crane(?:s|ing)? up|pedestal up|look(?:s|ing)? up|tilt(?:s|ing)?"),
    (Motion.TILT_DOWN, r"tilt(?:s|ing)? down|crane(?:s|ing)? down|pedestal down|look(?:s|ing)? down"),
    (
        Motion.ORBIT,
        r"orbit(?:s|ing|al)?|arc(?:s|ing)?(?: shot| around)?|"
        r"circl(?:e|es|ing) around|rotat(?:e|es|ing) around",
    ),
    (Motion.PARALLAX, r"parallax|2\.5d|3d|truck(?:s|ing)?|side[- ]?ways|slide(?:s)?"),
)
_COMPILED = tuple((motion, re.compile(rf"\b(?:{pattern})\b")) for motion, pattern in _PATTERNS)
_SLOW = re.compile(r"\b(?:slow(?:ly)?|gentle|gently|subtle|subtly|soft(?:ly)?|calm)\b")
_FAST = re.compile(r"\b(?:fast|quick(?:ly)?|rapid(?:ly)?|dramatic(?:ally)?|dynamic|swift(?:ly)?)\b")


@dataclass(frozen=True, slots=True)
class MotionChoice:
    motion: Motion
    intensity: float  # 1.0 is the normal amount of travel; "slow" and "fast" scale it


def choose_motion(prompt: str, camera_fixed: bool = False) -> MotionChoice:
    """The move a prompt's wording asks for, a gentle push-in when it names none; locked if fixed."""
    text = prompt.lower()
    intensity = 1.0
    if _SLOW.search(text):
        intensity = 0.65
    elif _FAST.search(text):
        intensity = 1.5
    if camera_fixed:
        return MotionChoice(Motion.STATIC, intensity)
    best: tuple[int, int, int, Motion] | None = None
    for order, (motion, pattern) in enumerate(_COMPILED):
        match = pattern.search(text)
        if match is None:
            continue
        rank = (match.start(), match.start() - match.end(), order, motion)
        if best is None or rank[:3] < best[:3]:
            best = rank
    return MotionChoice(best[3] if best else DEFAULT_MOTION, intensity)


@dataclass(frozen=True, slots=True)
class CameraPath:
    """Per-frame camera parameters, each a float64 tensor of length `frames`."""

    zoom: torch.Tensor  # >= 1: how much of the source the window leaves out
    cx: torch.Tensor  # window centre, 0..1 of the source width
    cy: torch.Tensor
    shift: torch.Tensor  # depth displacement (source widths) of the nearest pixels
    ambient: torch.Tensor  # 0..1 phase of the locked camera's in-frame motion
    depth_pivot: float  # nearness that stays put under `shift` (0: the far plane, 0.5: mid-scene)
    max_zoom: float  # the most the window magnifies: how much source resolution a render needs

    @property
    def frames(self) -> int:
        return int(self.zoom.shape[0])


def ease(t: torch.Tensor) -> torch.Tensor:
    """Ease in and out (smootherstep): starts and ends at rest, no jolt in the acceleration."""
    return t * t * t * (t * (t * 6 - 15) + 10)


def plan_path(
    choice: MotionChoice,
    frames: int,
    duration_s: float,
    seed: int,
    focus: tuple[float, float] = (0.5, 0.5),
) -> CameraPath:
    """The camera's path for a clip; `focus` (0..1) is where a push-in heads; `seed` varies the details."""
    rng = torch.Generator().manual_seed(seed)
    # Longer clips travel further, but less than in proportion, so speed stays pleasant.
    reach = choice.intensity * min(max(math.sqrt(duration_s / 5.0), 0.6), 1.4)
    reach *= 0.9 + 0.2 * float(torch.rand((), generator=rng, dtype=torch.float64))
    t = ease(torch.linspace(0.0, 1.0, frames, dtype=torch.float64))
    builder = _BUILDERS[choice.motion]
    return builder(t, reach, rng, focus)


def _steady(t: torch.Tensor, zoom: float) -> CameraPath:
    flat = torch.full_like(t, 0.5)
    return CameraPath(
        zoom=torch.full_like(t, zoom),
        cx=flat,
        cy=flat.clone(),
        shift=torch.zeros_like(t),
        ambient=torch.zeros_like(t),
        depth_pivot=0.0,
        max_zoom=zoom,
    )


def _zoom_path(t: torch.Tensor, reach: float, rng: torch.Generator, focus: tuple[float, float]) -> CameraPath:
    """A push-in towards `focus`; the window's centre travels with the zoom so it never leaves the source."""
    end = 1.0 + min(0.2 * reach, 0.45)
    jitter = (torch.rand(2, generator=rng, dtype=torch.float64) - 0.5) * 0.08
    zoom = 1.0 + (end - 1.0) * t
    room_end = 0.5 - 0.5 / end
    fx = 0.5 + max(-room_end, min(room_end, focus[0] - 0.5 + float(jitter[0])))
    fy = 0.5 + max(-room_end, min(room_end, focus[1] - 0.5 + float(jitter[1])))
    # The room to move off-centre grows as 1 - 1/zoom: keeping the same fraction of it stays inside.
    along = (1.0 - 1.0 / zoom) / (1.0 - 1.0 / end)
    return CameraPath(
        zoom=zoom,
        cx=0.5 + (fx - 0.5) * along,
        cy=0.5 + (fy - 0.5) * along,
        shift=torch.zeros_like(t),
        ambient=torch.zeros_like(t),
        depth_pivot=0.0,
        max_zoom=end,
    )


def _push_in(t: torch.Tensor, reach: float, rng: torch.Generator, focus: tuple[float, float]) -> CameraPath:
    return _zoom_path(t, reach, rng, focus)


def _pull_out(t: torch.Tensor, reach: float, rng: torch.Generator, focus: tuple[float, float]) -> CameraPath:
    path = _zoom_path(t, reach, rng, focus)
    return CameraPath(
        zoom=path.zoom.flip(0),
        cx=path.cx.flip(0),
        cy=path.cy.flip(0),
        shift=path.shift,
        ambient=path.ambient,
        depth_pivot=0.0,
        max_zoom=path.max_zoom,
    )


def _slide(t: torch.Tensor, reach: float, horizontal: bool, towards_start: bool) -> CameraPath:
    """A pan or tilt: a window slightly tighter than the frame travels across the source."""
    travel = min(0.14 * reach, 0.3)
    zoom = 1.0 / (1.0 - travel)
    sign = -1.0 if towards_start else 1.0
    moving = 0.5 + sign * travel * (t - 0.5)
    path = _steady(t, zoom)
    cx, cy = (moving, path.cy) if horizontal else (path.cx, moving)
    return CameraPath(
        zoom=path.zoom, cx=cx, cy=cy, shift=path.shift, ambient=path.ambient, depth_pivot=0.0, max_zoom=zoom
    )


def _pan_left(t: torch.Tensor, reach: float, rng: torch.Generator, focus: tuple[float, float]) -> CameraPath:
    return _slide(t, reach, horizontal=True, towards_start=True)


def _pan_right(t: torch.Tensor, reach: float, rng: torch.Generator, focus: tuple[float, float]) -> CameraPath:
    return _slide(t, reach, horizontal=True, towards_start=False)


def _tilt_up(t: torch.Tensor, reach: float, rng: torch.Generator, focus: tuple[float, float]) -> CameraPath:
    return _slide(t, reach, horizontal=False, towards_start=True)


def _tilt_down(t: torch.Tensor, reach: float, rng: torch.Generator, focus: tuple[float, float]) -> CameraPath:
    return _slide(t, reach, horizontal=False, towards_start=False)


def _depth_move(t: torch.Tensor, reach: float, rng: torch.Generator, pivot: float, push: float) -> CameraPath:
    """Near pixels slide further than far ones; the window is tight enough that no edge shows."""
    amount = min(0.035 * reach, 0.08)
    direction = 1.0 if float(torch.rand((), generator=rng, dtype=torch.float64)) < 0.5 else -1.0
    shift = direction * amount * (2.0 * t - 1.0)
    # The largest displacement is amount * max(pivot, 1 - pivot); leave that much room each side.
    base = 1.0 / (1.0 - 2.0 * (amount * max(pivot, 1.0 - pivot) + 0.01))
    zoom = base * (1.0 + push * t)
    flat = torch.full_like(t, 0.5)
    return CameraPath(
        zoom=zoom,
        cx=flat,
        cy=flat.clone(),
        shift=shift,
        ambient=torch.zeros_like(t),
        depth_pivot=pivot,
        max_zoom=float(zoom.max()),
    )


def _parallax(t: torch.Tensor, reach: float, rng: torch.Generator, focus: tuple[float, float]) -> CameraPath:
    """A sideways truck: the far plane stays, the foreground slides across it."""
    return _depth_move(t, reach, rng, pivot=0.0, push=0.02)


def _orbit(t: torch.Tensor, reach: float, rng: torch.Generator, focus: tuple[float, float]) -> CameraPath:
    """An arc around the mid-ground: near and far parts move in opposite directions, with a slight push."""
    return _depth_move(t, reach, rng, pivot=0.5, push=0.05)


def _static(t: torch.Tensor, reach: float, rng: torch.Generator, focus: tuple[float, float]) -> CameraPath:
    """A locked camera: the window never moves; only the ambient phase advances."""
    path = _steady(t, 1.0)
    return CameraPath(
        zoom=path.zoom,
        cx=path.cx,
        cy=path.cy,
        shift=path.shift,
        ambient=t.clone(),
        depth_pivot=0.0,
        max_zoom=1.0,
    )


_BUILDERS = {
    Motion.PUSH_IN: _push_in,
    Motion.PULL_OUT: _pull_out,
    Motion.PAN_LEFT: _pan_left,
    Motion.PAN_RIGHT: _pan_right,
    Motion.TILT_UP: _tilt_up,
    Motion.TILT_DOWN: _tilt_down,
    Motion.ORBIT: _orbit,
    Motion.PARALLAX: _parallax,
    Motion.STATIC: _static,
}
