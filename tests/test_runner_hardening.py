"""The runner under bugs and hostile provider text: bounded retries, no secrets in job bodies."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from adapters.errors import Rejected
from adapters.spec import Webhooks
from tests.support.api import wait_for_status
from tests.support.deployment import GROWTH_KEY, STUDIO_KEY, auth
from tests.support.fakes import FakeAdapter, FakeProvider


async def test_provider_text_echoing_a_secret_is_scrubbed(
    make_client: Any, providers: dict[str, FakeProvider]
) -> None:
    image = "data:image/png;base64," + "QUJD" * 40
    providers["cheap"].script.fail_with = Rejected(f"refused key {GROWTH_KEY} and {STUDIO_KEY} for {image}")
    client = await make_client()
    job = await (await client.post("/v1/jobs", json={"prompt": "x"}, headers=auth())).json()
    done = await wait_for_status(client, job["id"], "failed")
    text = await (await client.get(f"/v1/jobs/{job['id']}", headers=auth())).text()
    assert done["error"]["code"] == "rejected"
    assert GROWTH_KEY not in text and STUDIO_KEY not in text and "QUJDQUJD" not in text
    assert "refused key" in done["error"]["message"]


async def test_a_step_that_keeps_crashing_fails_the_job_after_bounded_retries(
    make_client: Any, providers: dict[str, FakeProvider]
) -> None:
    providers["cheap"].script.status_raises = RuntimeError("adapter bug")
    client = await make_client(lease_s=0.05, workers=1)
    job = await (await client.post("/v1/jobs", json={"prompt": "x"}, headers=auth())).json()
    done = await wait_for_status(client, job["id"], "failed")
    assert done["error"]["code"] == "internal"
    assert providers["cheap"].status_calls == 3
    assert len(providers["cheap"].submits) == 1


async def test_providers_that_send_webhooks_get_a_webhook_url_when_the_broker_has_a_public_url(
    make_client: Any, providers: dict[str, FakeProvider], monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await make_client(public_url="https://broker.internal.example/")
    job = await (await client.post("/v1/jobs", json={"prompt": "x"}, headers=auth())).json()
    await wait_for_status(client, job["id"], "succeeded")
    assert providers["cheap"].submits[0].webhook_url is None  # its spec says it sends none: polled
    monkeypatch.setattr(FakeAdapter, "spec", replace(FakeAdapter.spec, webhooks=Webhooks.SIGNED))
    job = await (await client.post("/v1/jobs", json={"prompt": "y"}, headers=auth())).json()
    await wait_for_status(client, job["id"], "succeeded")
    assert providers["cheap"].submits[1].webhook_url == "https://broker.internal.example/v1/callbacks/cheap"
    # A provider's callback reaches its adapter, which checks it (the fake one refuses all).
    refused = await client.post("/v1/callbacks/cheap", data=b"{}")
    assert refused.status == 422
    unknown = await client.post("/v1/callbacks/nobody", data=b"{}")
    assert unknown.status == 404


async def test_without_a_public_url_no_webhook_is_asked_for(
    make_client: Any, providers: dict[str, FakeProvider]
) -> None:
    client = await make_client()
    job = await (await client.post("/v1/jobs", json={"prompt": "x"}, headers=auth())).json()
    await wait_for_status(client, job["id"], "succeeded")
    assert providers["cheap"].submits[0].webhook_url is None
