"""An accepted job whose every route waits on an open circuit waits for it, as for a free slot: a
passing provider outage does not fail jobs that were already accepted."""

from __future__ import annotations

import asyncio
from typing import Any

from adapters.errors import ProviderUnavailable
from broker.appkeys import RUNNER
from tests.support.api import wait_for_status
from tests.support.deployment import auth, fake_config
from tests.support.fakes import FakeProvider


async def test_a_queued_job_waits_for_its_only_providers_circuit_instead_of_failing(
    make_client: Any, providers: dict[str, FakeProvider]
) -> None:
    client = await make_client(fake_config(growth={"providers": ["cheap"]}))
    runner = client.app[RUNNER]
    await runner.stop()  # the job is accepted while the circuit is closed, stepped once it is open
    response = await client.post("/v1/jobs", json={"prompt": "a pan"}, headers=auth())
    assert response.status == 202
    job = await response.json()
    for _ in range(6):
        down = ProviderUnavailable("down", provider="cheap")
        await runner.ctx.provider_health.report_failure("cheap", down)
    quote = await (await client.post("/v1/quotes", json={"prompt": "a pan"}, headers=auth())).json()
    assert quote["chosen"] is None  # a new job would be refused now; the accepted one must wait
    await runner.start()
    await asyncio.sleep(0.5)  # many steps on the runner's fast clock
    waiting = await (await client.get(f"/v1/jobs/{job['id']}", headers=auth())).json()
    assert waiting["status"] == "queued" and waiting["attempts"] == [], waiting
    assert providers["cheap"].submits == []  # nothing was sent through the open circuit
    assert (await client.delete(f"/v1/jobs/{job['id']}", headers=auth())).status in (200, 202)
    assert (await wait_for_status(client, job["id"], "cancelled"))["cost_usd"] == "0.000000"
