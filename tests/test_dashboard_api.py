"""What the dashboard stands on, without a browser: the page and its vendored files, `GET /v1/providers`,
and the gauges the Grafana board and alerts read."""

from __future__ import annotations

import re
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from adapters.errors import ProviderUnavailable
from broker.appkeys import RUNNER
from broker.config import BrokerConfig, ProviderConfig
from tests.support.api import wait_for_status
from tests.support.deployment import ADMIN_KEY, STUDIO_KEY, auth, fake_config

EXTERNAL_URL = re.compile(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", re.IGNORECASE)
SVG_NAMESPACE = "http://www.w3.org/2000/svg"  # a name, never fetched


def loads_from_elsewhere(text: str) -> bool:
    return EXTERNAL_URL.search(text.replace(SVG_NAMESPACE, "")) is not None


async def test_the_page_and_its_files_come_from_the_broker_alone(make_client: Any) -> None:
    client = await make_client()
    page = await client.get("/dashboard")  # no key: the page asks for one
    assert page.status == 200 and page.content_type == "text/html"
    csp = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "connect-src 'self'" in csp
    html = await page.text()
    assert set(re.findall(r'(?:src|href)="([^"]+)"', html)) == {
        "/dashboard/static/dashboard.js",
        "/dashboard/static/dashboard.css",
        "data:,",
    }
    for name, kind in (("dashboard.js", "text/javascript"), ("dashboard.css", "text/css")):
        asset = await client.get(f"/dashboard/static/{name}")
        assert asset.status == 200 and asset.content_type == kind
        assert not loads_from_elsewhere(await asset.text()), name
    assert not loads_from_elsewhere(html)
    for missing in ("other.js", "..%2Fdashboard.py", "dashboard.html"):
        answer = await client.get(f"/dashboard/static/{missing}")
        assert answer.status == 404 and (await answer.json())["error"]["code"] == "not_found"


def cheap_limited(config: BrokerConfig) -> BrokerConfig:
    """The config with `cheap` limited to 4 tasks at once and `dear` left without a limit."""
    providers = {"cheap": ProviderConfig(max_concurrency=4), "dear": ProviderConfig()}
    return config.model_copy(update={"providers": providers})


async def test_providers_reports_circuits_capacity_and_calls(make_client: Any) -> None:
    client = await make_client(cheap_limited(fake_config()))
    assert (await client.get("/v1/providers")).status == 401
    job = await (await client.post("/v1/jobs", json={"prompt": "x"}, headers=auth())).json()
    await wait_for_status(client, job["id"], "succeeded")
    health = client.app[RUNNER].health
    for _ in range(6):
        health.failed("dear", ProviderUnavailable("down", provider="dear"))
    body = await (await client.get("/v1/providers", headers=auth(STUDIO_KEY))).json()
    by_name = {p["provider"]: p for p in body["providers"]}
    assert list(by_name) == ["cheap", "dear"]
    assert by_name["cheap"]["circuit"] == "closed" and by_name["cheap"]["in_flight"] == 0
    assert by_name["cheap"]["max_concurrency"] == 4 and by_name["cheap"]["routable"] is True
    assert by_name["dear"]["max_concurrency"] is None  # no limit of the broker's own
    # `cheap` is reached without HTTP (no base_url, as the local backend): its renders are its calls.
    assert (by_name["cheap"]["requests"], by_name["cheap"]["failed_requests"]) == (1, 0)
    assert by_name["cheap"]["mean_latency_s"] is not None and by_name["dear"]["requests"] == 0
    assert by_name["dear"]["circuit"] == "open" and by_name["dear"]["circuit_reason"].startswith(
        "circuit open"
    )


async def test_metrics_export_the_gauges_the_alerts_read(make_client: Any) -> None:
    client = await make_client(cheap_limited(fake_config(growth={"monthly_budget_usd": "10.00"})))
    job = await (await client.post("/v1/jobs", json={"prompt": "x"}, headers=auth())).json()
    await wait_for_status(client, job["id"], "succeeded")
    for _ in range(6):
        client.app[RUNNER].health.failed("dear", ProviderUnavailable("down", provider="dear"))
    text = await (await client.get("/metrics")).text()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples["broker_runner_up", ()] == 1
    assert samples["broker_provider_circuit_open", (("provider", "dear"),)] == 1
    assert samples["broker_provider_circuit_open", (("provider", "cheap"),)] == 0
    assert samples["broker_provider_in_flight", (("provider", "cheap"),)] == 0
    assert samples["broker_provider_max_concurrency", (("provider", "cheap"),)] == 4
    limit = samples["broker_budget_limit_usd", (("team", "growth"), ("window", "month"))]
    left = samples["broker_budget_remaining_usd", (("team", "growth"), ("window", "month"))]
    assert limit == 10.0 and left == 10.0 - 0.10
    admin = await (await client.get("/v1/providers", headers=auth(ADMIN_KEY))).json()
    assert len(admin["providers"]) == 2
