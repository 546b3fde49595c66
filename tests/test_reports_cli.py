"""`broker report`: the table and the CSV, read straight from a store the broker wrote."""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import UTC, datetime
from pathlib import Path

import pytest

from broker.cli.report import run_report
from broker.observability.reports import Dimension, build_report
from broker.store.sqlite import SQLiteStore
from tests.support.reports import workload

NOW = datetime(2026, 11, 25, tzinfo=UTC)


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    """A SQLite store holding the aggregation tests' five jobs (20 and 21 November)."""
    path = tmp_path / "broker.db"

    async def fill() -> None:
        store = SQLiteStore(path)
        await store.open()
        try:
            for record in workload():
                await store.create_job(record)
        finally:
            await store.close()

    asyncio.run(fill())
    return f"sqlite:///{path}"


def test_table_lists_each_group_and_the_totals(store_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = run_report(["--store-url", store_url, "--from", "2026-11-20", "--by", "provider,team"], now=NOW)
    out = capsys.readouterr().out
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "Costs from 2026-11-20T00:00:00+00:00 to 2026-11-25T00:00:00+00:00, by provider, team"
    assert lines[2].split()[:4] == ["provider", "team", "jobs", "ok"]
    expected = build_report(workload(), [Dimension.PROVIDER, Dimension.TEAM], NOW, NOW)
    data = [line.split() for line in lines[4:] if not line.startswith("-")]
    assert [row[:2] for row in data] == [list(key) for key, _ in expected.groups] + [["(total)", "(total)"]]
    spend_column = lines[2].split().index("spend")  # "spend $" is two words in the title line
    assert [row[spend_column] for row in data] == [str(t.spend) for _, t in expected.groups] + ["0.670000"]
    # Figures are right-aligned under their titles.
    assert len({len(line) for line in lines[2:] if not line.startswith("-")}) == 1


def test_csv_equals_the_reports_csv_and_team_filter_applies(
    store_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "--store-url",
        store_url,
        "--from",
        "2026-11-20",
        "--to",
        "2026-11-21",
        "--by",
        "team,day",
        "--csv",
    ]
    assert run_report(argv, now=NOW) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    start, end = datetime(2026, 11, 20, tzinfo=UTC), datetime(2026, 11, 22, tzinfo=UTC)
    expected = build_report(workload(), [Dimension.TEAM, Dimension.DAY], start, end)
    assert rows == list(csv.DictReader(io.StringIO(expected.to_csv())))
    assert run_report([*argv, "--team", "studio"], now=NOW) == 0
    studio = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert {r["team"] for r in studio} == {"studio", "(total)"} and studio[-1]["jobs"] == "2"


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--by", "provider,colour"], "--by"),
        (["--from", "soon"], "--from"),
        (["--from", "2026-11-21", "--to", "2026-11-01"], "--from"),
    ],
)
def test_bad_options_exit_2_naming_the_option(
    store_url: str, capsys: pytest.CaptureFixture[str], argv: list[str], named: str
) -> None:
    assert run_report(["--store-url", store_url, *argv], now=NOW) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith(f"broker report: {named}:")


def test_a_missing_store_is_not_created(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nowhere" / "broker.db"
    assert run_report(["--store-url", f"sqlite:///{missing}"], now=NOW) == 2
    assert "no SQLite store" in capsys.readouterr().err and not missing.parent.exists()


def test_without_grouping_the_table_is_the_totals_alone(
    store_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_report(["--store-url", store_url, "--from", "2026-11-20", "--by", ""], now=NOW) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("+00:00") and len(lines) == 5  # title, blank, titles, rule, totals
    assert lines[-1].split()[:2] == ["5", "2"] and "0.670000" in lines[-1].split()


def test_without_a_store_url_it_asks_a_broker_and_says_how_else(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BROKER_API_KEY", raising=False)
    assert run_report([], now=NOW) == 3  # no key for the broker
    assert "no API key" in capsys.readouterr().err
    assert run_report(["--url", "http://127.0.0.1:9", "--key", "k"], now=NOW) == 7
    err = capsys.readouterr().err
    assert err.startswith("broker report: cannot reach the broker at http://127.0.0.1:9")
    assert "--store-url" in err and err.count("\n") == 1
