"""Cost report aggregation: attribution of attempts and jobs to groups, savings, parameters."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

import pytest

from broker.observability.reports import BadParameter, Dimension, build_report, parse_group_by, report_window
from pricing.money import Money
from tests.support.reports import DAY1, DAY2, workload


def report(*dims: Dimension) -> dict[str, dict[str, object]]:
    body = build_report(workload(), dims, DAY1, DAY2 + timedelta(days=1)).to_json()
    return {"/".join(str(g[d.value]) for d in dims): g for g in body["groups"]}


def test_spend_follows_each_attempts_provider_and_jobs_follow_their_final_route() -> None:
    by_provider = report(Dimension.PROVIDER)
    assert by_provider["cheap"]["spend_usd"] == "0.170000"  # 0.10 + 0.03 (fallen back from) + 0.04
    assert by_provider["dear"]["spend_usd"] == "0.500000"
    # The fallback job counts once, where it ended: on dear.
    assert (by_provider["cheap"]["jobs"], by_provider["cheap"]["succeeded"]) == (3, 1)
    assert (by_provider["dear"]["jobs"], by_provider["dear"]["succeeded"], by_provider["dear"]["failed"]) == (
        2,
        1,
        1,
    )
    assert by_provider["cheap"]["attempts"] == 4 and by_provider["dear"]["attempts"] == 2


def test_totals_equal_the_sum_of_the_jobs_costs_in_every_grouping() -> None:
    expected = sum((r.job.cost_usd for r in workload()), Money.zero())
    for dims in ([], [Dimension.PROVIDER], [Dimension.TEAM, Dimension.MODEL], list(Dimension)):
        body = build_report(workload(), dims, DAY1, DAY2).to_json()
        assert body["totals"]["spend_usd"] == str(expected) == "0.670000"
        groups = body["groups"]
        if dims:
            assert sum((Money.parse(g["spend_usd"]) for g in groups), Money.zero()) == expected
            assert sum(g["jobs"] for g in groups) == 5
        else:
            assert groups == []


def test_savings_are_baseline_minus_actual_for_succeeded_jobs_only() -> None:
    by_team = report(Dimension.TEAM)
    # growth: one success at 0.10 against a 0.50 baseline; its failures don't count.
    assert by_team["growth"]["savings_usd"] == "0.400000" and by_team["growth"]["baseline_usd"] == "0.500000"
    # studio: the fallback cost 0.03 + 0.50 against 0.50, so routing lost 0.03 on it.
    assert by_team["studio"]["savings_usd"] == "-0.030000"


def test_average_per_success_counts_failed_spend_and_is_null_without_successes() -> None:
    by_team = report(Dimension.TEAM)
    assert by_team["growth"]["avg_cost_per_success_usd"] == "0.140000"  # (0.10 + 0.04 + 0) / 1
    by_day = report(Dimension.DAY)
    assert set(by_day) == {"2026-11-20", "2026-11-21"}
    totals = build_report([workload()[2]], [], DAY1, DAY2).totals
    assert totals.average_per_success is None and totals.to_json()["avg_cost_per_success_usd"] is None


def test_unbilled_is_the_estimate_of_submitted_attempts_that_ended_free() -> None:
    by_provider = report(Dimension.PROVIDER)
    assert by_provider["dear"]["unbilled_usd"] == "0.500000"  # the refunded failure
    assert by_provider["cheap"]["unbilled_usd"] == "0.100000"  # the cancelled one, never billed


def test_estimate_and_several_dimensions_at_once() -> None:
    groups = report(Dimension.PROVIDER, Dimension.TEAM, Dimension.DAY)
    assert set(groups) == {
        "cheap/growth/2026-11-20",
        "cheap/studio/2026-11-20",
        "cheap/studio/2026-11-21",
        "dear/studio/2026-11-21",
        "dear/growth/2026-11-21",
    }
    # The job's quote is counted on its final route.
    assert groups["dear/studio/2026-11-21"]["estimate_usd"] == "0.100000"
    # The attempt studio's job fell back from is a group of spend without a job of its own.
    fell_back = groups["cheap/studio/2026-11-21"]
    assert (fell_back["jobs"], fell_back["attempts"], fell_back["spend_usd"]) == (0, 1, "0.030000")


def test_csv_rows_match_the_json_groups_and_end_with_totals() -> None:
    built = build_report(workload(), [Dimension.PROVIDER, Dimension.TEAM], DAY1, DAY2)
    rows = list(csv.DictReader(io.StringIO(built.to_csv())))
    body = built.to_json()
    assert len(rows) == len(body["groups"]) + 1
    for row, group in zip(rows, body["groups"], strict=False):
        assert row == {k: "" if v is None else str(v) for k, v in group.items()}
    assert rows[-1]["provider"] == rows[-1]["team"] == "(total)"
    assert rows[-1]["spend_usd"] == body["totals"]["spend_usd"]


@pytest.mark.parametrize(
    ("text", "param"),
    [("provider,provider", "group_by"), ("region", "group_by"), ("team,,cost", "group_by")],
)
def test_group_by_errors_name_the_parameter(text: str, param: str) -> None:
    with pytest.raises(BadParameter) as caught:
        parse_group_by(text)
    assert caught.value.param == param


def test_report_window_defaults_and_bounds() -> None:
    now = datetime(2026, 11, 21, 15, 30, tzinfo=UTC)
    assert report_window(None, None, now) == (datetime(2026, 11, 1, tzinfo=UTC), now)
    # A bare date as `to` takes in that whole day; the default start is that month's first.
    assert report_window(None, "2026-10-31", now) == (
        datetime(2026, 10, 1, tzinfo=UTC),
        datetime(2026, 11, 1, tzinfo=UTC),
    )
    start, end = report_window("2026-11-20T10:00:00+02:00", "2026-11-21T00:00:00", now)
    assert start == datetime(2026, 11, 20, 8, tzinfo=UTC) and end == datetime(2026, 11, 21, tzinfo=UTC)
    for args, param in [
        (("yesterday", None), "from"),
        ((None, "2026-13-01"), "to"),
        (("2026-11-21", "2026-11-20"), "from"),
        (("2020-01-01", "2026-01-01"), "to"),
    ]:
        with pytest.raises(BadParameter) as caught:
            report_window(*args, now)
        assert caught.value.param == param
