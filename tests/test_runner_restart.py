"""Jobs and outputs survive a restart; in-flight work resumes without a second submit."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from broker.schema import Attempt, AttemptStatus, JobStatus, RouteRef
from broker.settings import Settings
from broker.store.sqlite import SQLiteStore
from tests.support.api import wait_for_status
from tests.support.deployment import auth
from tests.support.factories import job_record
from tests.support.fakes import FakeProvider


async def test_finished_job_and_output_survive_restart(make_client: Any) -> None:
    first = await make_client()
    job = await (await first.post("/v1/jobs", json={"prompt": "x"}, headers=auth())).json()
    done = await wait_for_status(first, job["id"], "succeeded")
    await first.close()

    second = await make_client()
    again = await (await second.get(f"/v1/jobs/{job['id']}", headers=auth())).json()
    assert again == done
    video = await second.get(f"/v1/jobs/{job['id']}/output", headers=auth())
    assert video.status == 200 and len(await video.read()) == done["output"]["bytes"]


async def test_running_job_resumes_polling_after_restart(
    make_client: Any, providers: dict[str, FakeProvider]
) -> None:
    providers["cheap"].script.polls_to_finish = 10_000
    first = await make_client(lease_s=0.3)
    job = await (await first.post("/v1/jobs", json={"prompt": "x"}, headers=auth())).json()
    await wait_for_status(first, job["id"], "running")
    while providers["cheap"].status_calls < 2:  # submitted and being polled
        await wait_for_status(first, job["id"], "running")
    await first.close()

    providers["cheap"].script.polls_to_finish = 1
    # The old process's lease has to run out before another runner may take the job over.
    second = await make_client(workers=1)
    done = await wait_for_status(second, job["id"], "succeeded", "failed")
    assert done["status"] == "succeeded"
    assert len(providers["cheap"].submits) == 1
    assert len(done["attempts"]) == 1


async def test_interrupted_submit_is_never_resent(
    make_client: Any, settings: Settings, providers: dict[str, FakeProvider]
) -> None:
    store = SQLiteStore.from_url(settings.store_url)
    await store.open()
    record = job_record(prompt="x")
    now = datetime.now(UTC)
    attempt = Attempt(
        id="att_interrupted",
        job_id=record.id,
        provider="cheap",
        model="c1",
        status=AttemptStatus.SUBMITTING,
        started_at=now,
        estimated_cost_usd="0.100000",
    )
    crashed = record.evolve(
        status=JobStatus.RUNNING,
        attempts=[attempt],
        route=RouteRef(provider="cheap", model="c1", estimated_cost_usd="0.100000"),
    ).model_copy(update={"lease_owner": "dead-runner", "lease_until": 0.0, "tried_routes": ["cheap/c1"]})
    await store.create_job(crashed)
    await store.close()

    client = await make_client()
    done = await wait_for_status(client, record.id, "succeeded", "failed")
    assert done["status"] == "failed"
    assert done["error"]["code"] == "submission_uncertain"
    assert done["attempts"][0]["status"] == "failed"
    assert providers["cheap"].submits == [] and providers["dear"].submits == []
