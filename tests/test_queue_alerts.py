"""The provider-queue alerts fire on the series that should page and stay quiet on the others, as
`promtool test rules` evaluates them over synthetic series (annotations are left to `promtool check
rules` in test_deploy_files.py: here only when a rule fires, and with which labels)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.test_deploy_files import ALERTS

pytestmark = pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")


def _series(name: str, values: str, instance: str = "r1", **labels: str) -> dict[str, str]:
    matchers = ",".join(f'{key}="{value}"' for key, value in {**labels, "instance": instance}.items())
    return {"series": f"{name}{{{matchers}}}", "values": values}


def _waits(team: str, buckets: dict[str, str]) -> list[dict[str, str]]:
    return [_series("broker_queue_wait_seconds_bucket", v, team=team, le=le) for le, v in buckets.items()]


def _promtool(tmp_path: Path, series: list[dict[str, str]], checks: list[dict[str, Any]]) -> str:
    """Run promtool's rule tests on the alerts (annotations dropped); returns its output on failure."""
    alerts = yaml.safe_load(ALERTS.read_text())
    for group in alerts["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    rules = tmp_path / "alerts.yml"
    rules.write_text(yaml.safe_dump(alerts))
    test = {
        "rule_files": [str(rules)],
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": series, "alert_rule_test": checks}],
    }
    spec = tmp_path / "queue-alerts-test.yml"
    spec.write_text(yaml.safe_dump(test))
    ran = subprocess.run(["promtool", "test", "rules", str(spec)], capture_output=True, text=True)
    return "" if ran.returncode == 0 else ran.stdout + ran.stderr


def test_a_long_queue_wait_pages_for_its_team_only(tmp_path: Path) -> None:
    # batch: a job a minute gets its slot after 30 to 60 minutes; growth: one every 30 s, within a minute.
    series = _waits("batch", {"1800.0": "0x90", "3600.0": "0+1x90", "+Inf": "0+1x90"})
    series += _waits("growth", {"60.0": "0+2x90", "1800.0": "0+2x90", "+Inf": "0+2x90"})
    checks = [
        {"eval_time": "10m", "alertname": "BrokerQueueWaitLong", "exp_alerts": []},  # not for 15 min yet
        {
            "eval_time": "60m",
            "alertname": "BrokerQueueWaitLong",
            "exp_alerts": [{"exp_labels": {"severity": "warning", "team": "batch"}}],
        },
    ]
    assert _promtool(tmp_path, series, checks) == ""


def test_a_queue_growing_for_half_an_hour_pages_and_a_steady_one_does_not(tmp_path: Path) -> None:
    # Two replicas report cheap's shared queue (a job more a minute); dear's holds at 20.
    series = [
        _series("broker_provider_queue_depth", "0+1x120", "r1", provider="cheap", team="growth"),
        _series("broker_provider_queue_depth", "0+1x120", "r2", provider="cheap", team="growth"),
        _series("broker_provider_queue_depth", "20x120", provider="dear", team="growth"),
    ]
    checks = [
        {"eval_time": "30m", "alertname": "BrokerProviderQueueGrowing", "exp_alerts": []},
        {
            "eval_time": "90m",
            "alertname": "BrokerProviderQueueGrowing",
            "exp_alerts": [{"exp_labels": {"severity": "warning", "provider": "cheap"}}],
        },
    ]
    assert _promtool(tmp_path, series, checks) == ""
