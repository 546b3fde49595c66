"""config.yaml: the shipped file loads; a bad one stops the start naming the file, key path and problem."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from broker.config import ConfigError, lease_problems, load_config

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_the_shipped_config_loads() -> None:
    config = load_config(ROOT / "config.yaml")
    assert {"runway", "fal", "muvi", "doitong", "pixelapi", "local"} <= set(config.providers)
    assert any(route.key == "local/camera-motion" for route in config.routes)


@pytest.mark.parametrize(
    ("text", "location", "problem"),
    [
        ("routes: [{provider: nope, model: m}]", "routes.0", "durations"),
        (
            "providers: {p: {}}\nroutes:\n  - {provider: p, model: m, modes: [image_to_video],"
            " durations: {min: 2, max: 10}, aspect_ratios: ['16:9'], resolutions: ['720p'],"
            " quality: standard, expected_latency_s: 0}",
            "routes.0.expected_latency_s",
            "greater than or equal to 1",
        ),
        ("teams: [{name: growth, api_key_env: K, policy: missing}]", "teams.0.policy", "unknown policy"),
        ("policies: {default: {max_cost_usd: lots}}", "policies.default.max_cost_usd", "pattern"),
        ("providers: {runway: {base_url: x, surprise: 1}}", "providers.runway.surprise", "Extra inputs"),
    ],
)
def test_a_bad_file_names_the_key_path_and_the_problem(
    tmp_path: Path, text: str, location: str, problem: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(str(path)) and location in message and problem in message


def test_unreadable_and_non_yaml_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "routes: [unclosed"))
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(write(tmp_path, "- just\n- a list\n"))


def test_serve_refuses_to_start_with_a_bad_file(tmp_path: Path) -> None:
    path = write(tmp_path, "teams: [{name: growth, api_key_env: K, policy: missing}]")
    result = subprocess.run(
        [sys.executable, "-m", "broker", "serve", "--config", str(path), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 2
    assert str(path) in result.stderr and "teams.0.policy" in result.stderr


def test_serve_refuses_a_provider_timeout_that_cannot_fit_the_lease(tmp_path: Path) -> None:
    """A step renews its lease right before a request: the request must end within half a lease."""
    env = {**os.environ, "BROKER_LEASE_S": "40", "BROKER_DATA_DIR": str(tmp_path / "data")}
    result = subprocess.run(
        [sys.executable, "-m", "broker", "serve", "--config", str(ROOT / "config.yaml"), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=env,
    )
    assert result.returncode == 2, result.stderr
    assert "providers.runway.timeout_s is 30 s" in result.stderr and "BROKER_LEASE_S=40" in result.stderr
    assert lease_problems(load_config(ROOT / "config.yaml"), 60.0) == []  # the shipped defaults fit
