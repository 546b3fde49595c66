"""Camera moves: the prompt's wording picks the move, and every path is eased and stays in the picture."""

from __future__ import annotations

import pytest
import torch

from local_backend.motion import DEFAULT_MOTION, Motion, MotionChoice, choose_motion, ease, plan_path


@pytest.mark.parametrize(
    ("prompt", "motion"),
    [
        ("a slow zoom in on the lighthouse", Motion.PUSH_IN),
        ("Camera pushes in towards her face", Motion.PUSH_IN),
        ("zoom out to reveal the city", Motion.PULL_OUT),
        ("the camera pulls back", Motion.PULL_OUT),
        ("pan left across the valley", Motion.PAN_LEFT),
        ("camera pans to the right", Motion.PAN_RIGHT),
        ("tilt up to the sky", Motion.TILT_UP),
        ("tilting down to the river", Motion.TILT_DOWN),
        ("orbit around the statue", Motion.ORBIT),
        ("a parallax shot of the forest", Motion.PARALLAX),
        ("static shot, waves rolling in", Motion.STATIC),
        ("locked-off tripod shot of a street", Motion.STATIC),
        ("a quiet mountain lake at dawn", DEFAULT_MOTION),
        ("", DEFAULT_MOTION),
    ],
)
def test_the_prompt_wording_picks_the_move(prompt: str, motion: Motion) -> None:
    assert choose_motion(prompt).motion is motion


def test_the_first_move_named_wins_and_the_longer_phrase_at_one_place() -> None:
    assert choose_motion("pan left, then zoom in").motion is Motion.PAN_LEFT
    assert choose_motion("zoom in, then pan left").motion is Motion.PUSH_IN
    assert choose_motion("zoom out").motion is Motion.PULL_OUT  # not the "zoom" of a push-in


def test_a_fixed_camera_overrides_the_wording() -> None:
    assert choose_motion("fast orbit around the car", camera_fixed=True).motion is Motion.STATIC


def test_slow_and_fast_words_scale_the_travel() -> None:
    slow, normal, fast = (choose_motion(p).intensity for p in ("slow pan left", "pan left", "fast pan left"))
    assert slow < normal < fast
    zoom = [
        float(plan_path(choose_motion(p), 48, 2, seed=1).zoom[-1]) for p in ("slow zoom", "zoom", "fast zoom")
    ]
    assert zoom[0] < zoom[1] < zoom[2]


def test_easing_starts_and_ends_at_rest() -> None:
    t = torch.linspace(0, 1, 1001, dtype=torch.float64)
    eased = ease(t)
    assert float(eased[0]) == 0.0 and float(eased[-1]) == 1.0
    speed = torch.diff(eased) * 1000
    assert float(speed[0]) < 0.01 and float(speed[-1]) < 0.01
    assert float(speed.max()) > 1.5  # it speeds up in the middle: not linear
    assert bool((speed >= 0).all())


@pytest.mark.parametrize("motion", list(Motion))
@pytest.mark.parametrize("seed", [0, 7, 2**32 - 1])
def test_every_path_keeps_the_window_inside_the_source(motion: Motion, seed: int) -> None:
    for intensity in (0.65, 1.0, 1.5):
        path = plan_path(MotionChoice(motion, intensity), 240, 10, seed, focus=(0.95, 0.05))
        half = 0.5 / path.zoom
        # The depth moves displace up to |shift| * max(pivot, 1 - pivot) more; that must fit as well.
        reach = half + path.shift.abs() * max(path.depth_pivot, 1 - path.depth_pivot)
        assert bool((path.cx - reach >= -1e-9).all() and (path.cx + reach <= 1 + 1e-9).all())
        assert bool((path.cy - half >= -1e-9).all() and (path.cy + half <= 1 + 1e-9).all())
        assert bool((path.zoom >= 1.0).all()) and path.max_zoom >= float(path.zoom.max()) - 1e-9


def test_moves_go_the_way_they_are_named() -> None:
    def path(prompt: str) -> tuple[float, float, float, float]:
        p = plan_path(choose_motion(prompt), 48, 2, seed=3)
        return float(p.cx[-1] - p.cx[0]), float(p.cy[-1] - p.cy[0]), float(p.zoom[0]), float(p.zoom[-1])

    assert path("pan left")[0] < 0 < path("pan right")[0]
    assert path("tilt up")[1] < 0 < path("tilt down")[1]
    _, _, start, end = path("push in")
    assert start == pytest.approx(1.0) and end > 1.1
    _, _, start, end = path("pull out")
    assert start > 1.1 and end == pytest.approx(1.0)


def test_a_locked_camera_never_moves_its_window() -> None:
    path = plan_path(choose_motion("", camera_fixed=True), 48, 2, seed=5)
    assert bool((path.zoom == 1.0).all() and (path.cx == 0.5).all() and (path.cy == 0.5).all())
    assert bool((path.shift == 0).all())
    assert float(path.ambient[-1]) > float(path.ambient[0])


def test_the_seed_varies_the_details_and_repeats_exactly() -> None:
    one = plan_path(choose_motion("zoom in"), 48, 2, seed=11, focus=(0.6, 0.4))
    again = plan_path(choose_motion("zoom in"), 48, 2, seed=11, focus=(0.6, 0.4))
    other = plan_path(choose_motion("zoom in"), 48, 2, seed=12, focus=(0.6, 0.4))
    assert torch.equal(one.zoom, again.zoom) and torch.equal(one.cx, again.cx)
    assert not torch.equal(one.cx, other.cx)
