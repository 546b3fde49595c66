"""Money in the wire models: `Money` inside, the API's six-decimal string on the wire, in stored
records and in the OpenAPI document; records written as strings before still read."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from broker.api.openapi import document
from broker.schema import Attempt, AttemptStatus, JobStatus, RouteRef
from broker.store import JobRecord
from pricing.money import Money
from tests.support.factories import job_record

AT = datetime(2026, 11, 21, tzinfo=UTC)


def attempt(**money: Any) -> Attempt:
    return Attempt(
        id="att_1", job_id="job_1", provider="fal", model="m", status=AttemptStatus.SUCCEEDED, started_at=AT,
        **money,
    )


def test_a_decimal_string_is_read_as_money_and_written_back_with_six_decimals() -> None:
    tried = attempt(cost_usd="0.055", estimated_cost_usd="0.1", refunded_usd="0", unconfirmed_usd=None)
    assert tried.cost_usd == Money(55_000) and tried.estimated_cost_usd == Money(100_000)
    assert tried.refunded_usd == Money(0) and tried.unconfirmed_usd is None
    wire = tried.model_dump(mode="json")
    written = (wire["cost_usd"], wire["estimated_cost_usd"], wire["refunded_usd"])
    assert written == ("0.055000", "0.100000", "0.000000")
    assert Attempt.model_validate_json(tried.model_dump_json()) == tried


@pytest.mark.parametrize("amount", [0.05, 1, True, "abc", "NaN", [1]])
def test_an_amount_that_is_not_a_decimal_string_is_refused(amount: object) -> None:
    with pytest.raises(ValidationError):
        attempt(cost_usd=amount)


def test_a_job_costs_nothing_until_an_attempt_is_booked_and_says_so_as_text() -> None:
    job = job_record().job
    assert job.cost_usd == Money.zero()
    assert json.loads(job.model_dump_json())["cost_usd"] == "0.000000"


def test_a_record_stored_with_string_amounts_reads_back_as_money() -> None:
    record = job_record()
    raw = json.loads(record.model_dump_json())
    raw["job"].update(cost_usd="0.250000", estimated_cost_usd="0.300000", status=JobStatus.SUCCEEDED.value)
    route = {"provider": "fal", "model": "m", "estimated_cost_usd": "0.300000", "unpriced": False}
    raw["job"]["route"] = route
    raw["job"]["attempts"] = [json.loads(attempt(cost_usd="0.250000").model_dump_json())]
    raw.update(baseline_cost_usd="0.500000", reserved_usd="0.300000")
    read = JobRecord.model_validate_json(json.dumps(raw))
    assert read.job.cost_usd == Money(250_000) and read.job.attempts[0].cost_usd == Money(250_000)
    assert read.job.route == RouteRef(provider="fal", model="m", estimated_cost_usd=Money(300_000))
    assert (read.baseline_cost_usd, read.reserved_usd) == (Money(500_000), Money(300_000))
    assert json.loads(read.model_dump_json()) == raw  # written back exactly as it was stored


def test_the_openapi_document_shows_every_amount_as_a_string() -> None:
    schemas = document()["components"]["schemas"]
    amounts = {
        (model, name): field
        for model in ("Job", "Attempt", "RouteRef")
        for name, field in schemas[model]["properties"].items()
        if name.endswith("_usd")
    }
    assert len(amounts) == 7
    for field in amounts.values():
        types = [field] if "type" in field else field["anyOf"]
        assert {t["type"] for t in types} <= {"string", "null"} and "string" in {t["type"] for t in types}
    assert schemas["Job"]["properties"]["cost_usd"]["default"] == "0.000000"
