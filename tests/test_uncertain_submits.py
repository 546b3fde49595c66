"""A submit whose answer was lost is never free: where the provider takes an idempotency key it is sent
again with the same key, and when the retries are spent it is booked at its estimate, unconfirmed."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from adapters.errors import SubmissionUncertain
from adapters.http import RetryPolicy
from broker.appkeys import ADAPTERS
from tests.support.api import wait_for_status
from tests.support.deployment import auth, fake_config
from tests.support.fakes import FakeProvider


async def test_an_idempotent_submit_lost_every_time_is_booked_at_its_estimate_when_retries_end(
    make_client: Any, providers: dict[str, FakeProvider]
) -> None:
    client = await make_client(fake_config(growth={"providers": ["cheap"]}))
    adapter = client.app[ADAPTERS]["cheap"]
    # As doitong: the same attempt id is the same idempotency key.
    retry = RetryPolicy(attempts=3, base_delay_s=1.0, retry_on=(SubmissionUncertain,))
    adapter.spec = replace(adapter.spec, idempotent_submit=True, submit_retry=retry)
    providers["cheap"].script.submit_error = SubmissionUncertain("the answer was lost", provider="cheap")
    job = await (await client.post("/v1/jobs", json={"prompt": "a pan"}, headers=auth())).json()
    done = await wait_for_status(client, job["id"], "failed", "succeeded")
    assert done["error"]["code"] == "submission_uncertain", done
    [attempt] = done["attempts"]
    assert attempt["cost_usd"] == attempt["unconfirmed_usd"] == "0.100000"  # never $0
    assert done["cost_usd"] == "0.100000"
