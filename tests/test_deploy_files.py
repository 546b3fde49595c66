"""deploy/: the Grafana board and the Prometheus alerts load, and name only series the broker exports.

The exported names are read from a live app's /metrics after a job (and with a budget set), so a
renamed or dropped metric fails here rather than on an operator's wall. `promtool check rules`
validates the alerts, and the board's queries as recording rules, where promtool is installed.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from broker.observability.metrics import METRICS
from tests.support.api import wait_for_status
from tests.support.deployment import auth, fake_config

ROOT = Path(__file__).resolve().parent.parent
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
BOARD = ROOT / "deploy" / "grafana" / "broker-dashboard.json"
# Series Prometheus writes itself for every target, with the labels it adds.
PROMETHEUS_OWN = {"up": {"job", "instance"}}
TARGET_LABELS = {"job", "instance"}
KEYWORDS = {
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "inf",
    "nan",
}
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created")}
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


def alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def board() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(BOARD.read_text())
    return loaded


def board_queries() -> list[str]:
    return [target["expr"] for panel in board()["panels"] for target in panel.get("targets", [])]


def _strip(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)


def series_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: identifiers that are not functions, keywords,
    label names in matchers or grouping clauses, or durations."""
    text = _strip(expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.])[a-zA-Z_:][a-zA-Z0-9_:]*", text):
        word = match.group()
        if text[match.end() :].lstrip().startswith("(") or word.lower() in KEYWORDS:
            continue
        names.add(word)
    return names


def label_names(expr: str) -> set[str]:
    """Labels an expression matches on or groups by."""
    text = _strip(expr)
    labels = {m.group(1) for m in re.finditer(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)\s*\"", text)}
    for group in re.finditer(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", text):
        labels |= {name.strip() for name in group.group(1).split(",") if name.strip()}
    return labels


async def exported(make_client: Any) -> dict[str, set[str]]:
    """Every series name the broker exports (as /metrics writes it), with its label names."""
    client = await make_client(fake_config(growth={"monthly_budget_usd": "10.00"}))
    job = await (await client.post("/v1/jobs", json={"prompt": "x"}, headers=auth())).json()
    await wait_for_status(client, job["id"], "succeeded")
    # A labelled metric no one has touched yet writes no sample; its label names come from its definition.
    declared = {
        metric._name: set(metric._labelnames)
        for metric in vars(client.app[METRICS]).values()
        if isinstance(metric, MetricWrapperBase)
    }
    series: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(await (await client.get("/metrics")).text()):
        # The text format gives each counter's _created samples a family of their own.
        labels = declared[family.name.removesuffix("_created")] | TARGET_LABELS
        for suffix in SUFFIXES.get(family.type, ("",)):
            series[family.name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return series


def test_the_names_the_checks_find_are_the_right_ones() -> None:
    expr = (
        'sum by (provider) (rate(broker_x_total{status_class!~"2xx|3xx"}[5m])) / on (provider) '
        "histogram_quantile(0.95, broker_y_bucket) unless up offset 5m > bool 1e3"
    )
    assert series_names(expr) == {"broker_x_total", "broker_y_bucket", "up"}
    assert label_names(expr) == {"provider", "status_class"}


async def test_every_query_names_only_series_the_broker_exports(make_client: Any) -> None:
    series = {**await exported(make_client), **PROMETHEUS_OWN}
    queries = [rule["expr"] for rule in alert_rules()] + board_queries()
    assert len(queries) > 20
    for expr in queries:
        names = series_names(expr)
        assert names and names <= set(series), (expr, names - set(series))
        allowed = set().union(*(series[name] for name in names))
        assert label_names(expr) <= allowed, (expr, label_names(expr) - allowed)


def test_the_alerts_cover_what_operators_page_on() -> None:
    rules = {rule["alert"]: rule for rule in alert_rules()}
    for name in (
        "BrokerProviderErrorRate",
        "BrokerCircuitOpen",
        "BrokerBudgetNearlySpent",
        "BrokerJobsQueuedTooLong",
        "BrokerRunnerNotReady",
    ):
        assert name in rules
    for rule in rules.values():
        assert rule["labels"]["severity"] in ("warning", "critical") and rule["annotations"]["summary"]
        assert re.fullmatch(r"\d+[smh]", rule["for"])
    assert "0.10" in rules["BrokerBudgetNearlySpent"]["expr"]


def test_the_board_is_a_grafana_dashboard_on_a_prometheus_datasource() -> None:
    loaded = board()
    assert loaded["uid"] and loaded["title"] and loaded["schemaVersion"] >= 36
    variables = {v["name"]: v for v in loaded["templating"]["list"]}
    assert (
        variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    )
    panels = loaded["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    titles = " ".join(p["title"].lower() for p in panels)
    for topic in ("spend rate by provider", "status", "latency", "fail", "queue", "budget remaining"):
        assert topic in titles, topic
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert panel["targets"] and all(t["refId"] and t["expr"] for t in panel["targets"])


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (Debian: prometheus)")
def test_promtool_accepts_the_alerts_and_the_board_queries(tmp_path: Path) -> None:
    checked = subprocess.run(["promtool", "check", "rules", str(ALERTS)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in checked.stdout
    recording = [
        {"record": f"board:query_{i}", "expr": _grafana_free(expr)} for i, expr in enumerate(board_queries())
    ]
    rules = tmp_path / "board-queries.yml"
    rules.write_text(yaml.safe_dump({"groups": [{"name": "board", "rules": recording}]}))
    checked = subprocess.run(["promtool", "check", "rules", str(rules)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def _grafana_free(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr
