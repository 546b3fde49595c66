"""Reloading config.yaml in a running broker: prices, teams, keys, policies and limits change in place,
a job in flight carries on, and a bad file leaves everything as it was."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import yaml
from structlog.testing import capture_logs

from broker.appkeys import DEPLOYMENT, RUNNER
from broker.cli.reload import reload_config
from broker.config import parse_config
from tests.support.api import wait_for_status
from tests.support.deployment import TEST_ENV, auth, fake_route
from tests.support.fakes import FakeProvider

OPS_KEY = "ops-key-0123456789"


def raw_config(cheap_price: str = "0.10", *, ops_team: bool = False, cheap_slots: int = 4) -> dict[str, Any]:
    teams = [{"name": "growth", "api_key_env": "BROKER_KEY_GROWTH", "policy": "growth"}]
    if ops_team:
        teams.append({"name": "ops", "api_key_env": "BROKER_KEY_OPS"})
    return {
        "providers": {"cheap": {"max_concurrency": cheap_slots}, "dear": {}},
        "routes": [fake_route("cheap", "c1", cheap_price), fake_route("dear", "d1", "0.50")],
        "admin": {"api_key_env": "BROKER_ADMIN_KEY"},
        "teams": teams,
        "policies": {"default": {"max_attempts": 3}, "growth": {}},
    }


def write(path: Path, raw: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


async def chosen(client: Any, key: str | None = None) -> tuple[str, str]:
    headers = auth(key) if key else auth()
    answer = await (await client.post("/v1/quotes", json={"prompt": "a pan"}, headers=headers)).json()
    return answer["chosen"]["provider"], answer["chosen"]["cost_usd"]


async def test_a_reload_changes_prices_teams_and_limits_while_a_job_runs_on(
    make_client: Any, providers: dict[str, FakeProvider], tmp_path: Path
) -> None:
    cheap = providers["cheap"]
    cheap.script.polls_to_finish = 10**6
    client = await make_client(parse_config(raw_config(), "first"))
    job = await (await client.post("/v1/jobs", json={"prompt": "a pan"}, headers=auth())).json()
    await wait_for_status(client, job["id"], "running")
    assert await chosen(client) == ("cheap", "0.100000")
    assert (await client.get("/v1/jobs", headers=auth(OPS_KEY))).status == 401

    path = write(tmp_path / "config.yaml", raw_config("0.90", ops_team=True, cheap_slots=1))
    assert reload_config(client.app, path, env={**TEST_ENV, "BROKER_KEY_OPS": OPS_KEY})

    assert client.app[DEPLOYMENT].config.teams[-1].name == "ops"
    assert await chosen(client) == ("dear", "0.500000")
    assert (await client.get("/v1/jobs", headers=auth(OPS_KEY))).status == 200
    assert client.app[RUNNER].routes["cheap/c1"].price is not None
    assert client.app[RUNNER].capacity.blocked("cheap") == "provider cheap at capacity (1 of 1 running)"
    cheap.script.polls_to_finish = 1  # let the job that started before the reload finish
    done = await wait_for_status(client, job["id"], "succeeded", "failed")
    assert done["status"] == "succeeded" and [a["provider"] for a in done["attempts"]] == ["cheap"]


async def test_a_bad_file_keeps_the_running_config_and_logs_why(make_client: Any, tmp_path: Path) -> None:
    client = await make_client(parse_config(raw_config(), "first"))
    before = client.app[DEPLOYMENT].config
    broken = raw_config()
    broken["routes"][0]["provider"] = "nobody"
    write(tmp_path / "unknown-provider.yaml", broken)
    (tmp_path / "not-yaml.yaml").write_text("providers: [unclosed", encoding="utf-8")
    cases = {
        "unknown-provider.yaml": "routes.0.provider",
        "not-yaml.yaml": "not valid YAML",
        "missing.yaml": "cannot read",
    }
    for name, why in cases.items():
        with capture_logs() as logs:
            assert not reload_config(client.app, tmp_path / name, env=TEST_ENV)
        assert client.app[DEPLOYMENT].config is before
        [failed] = [entry for entry in logs if entry["event"] == "config_reload_failed"]
        assert str(tmp_path / name) in failed["error"] and why in failed["error"], failed
    assert await chosen(client) == ("cheap", "0.100000")


async def test_a_raised_limit_lets_a_waiting_job_go(
    make_client: Any, providers: dict[str, FakeProvider], tmp_path: Path
) -> None:
    cheap = providers["cheap"]
    cheap.script.polls_to_finish = 10**6
    client = await make_client(parse_config(raw_config(cheap_slots=1), "first"), workers=3)
    first = await (await client.post("/v1/jobs", json={"prompt": "a"}, headers=auth())).json()
    await wait_for_status(client, first["id"], "running")
    only_cheap = {"prompt": "b", "constraints": {"providers": ["cheap"]}}
    second = await (await client.post("/v1/jobs", json=only_cheap, headers=auth())).json()
    await asyncio.sleep(0.05)
    assert (await wait_for_status(client, second["id"], "queued"))["attempts"] == []
    assert reload_config(client.app, write(tmp_path / "c.yaml", raw_config(cheap_slots=2)), env=TEST_ENV)
    await wait_for_status(client, second["id"], "running")
    while len(cheap.submits) < 2:
        await asyncio.sleep(0.01)
    for job in (first, second):
        assert (await client.delete(f"/v1/jobs/{job['id']}", headers=auth())).status == 202
