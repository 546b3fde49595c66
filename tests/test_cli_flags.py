"""The CLI's own knowledge of the API, held to the schema: flag choices, the flags named in errors,
the input forms of the URL-only providers, the one-sandbox-per-store claim, and what it imports."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from adapters.doitong import IMAGE_ACCEPTANCE as DOITONG_ACCEPTANCE
from adapters.emulators import doitong, muvi
from adapters.muvi import IMAGE_ACCEPTANCE as MUVI_ACCEPTANCE
from broker.cli import CommandFailed
from broker.cli.exits import Exit
from broker.cli.jobflags import QUALITIES, RATIOS
from broker.cli.parsers import JOB_STATUSES
from broker.cli.remote import FLAGS, describe, flag_of
from broker.cli.sandbox_claim import claim_store
from broker.client import BrokerAPIError
from broker.schema import AspectRatio, Constraints, JobRequest, JobStatus, Quality
from broker.settings import Settings
from tests.support.procs import ROOT

HOSTED = "http://127.0.0.1:8080/v1/inputs/job_1?expires=1&sig=ab"
DATA_URI = "data:image/png;base64,iVBORw0KGgo="


def test_flag_choices_are_the_schemas_values() -> None:
    assert tuple(s.value for s in JobStatus) == JOB_STATUSES
    assert tuple(r.value for r in AspectRatio) == RATIOS
    assert tuple(q.value for q in Quality) == QUALITIES


def test_every_field_a_flag_names_is_a_request_field() -> None:
    for field in FLAGS:
        head, _, tail = field.partition(".")
        model: Any = Constraints if tail else JobRequest
        assert (tail or head) in model.model_fields or field == "image", field
    assert flag_of("constraints.providers.0") == "--provider"
    assert flag_of("constraints.max_cost_usd") == "--max-cost"
    assert flag_of("metadata.x") is None


def test_an_error_naming_no_flag_keeps_the_brokers_words_and_402_says_what_is_left() -> None:
    unflagged = BrokerAPIError(
        400, "invalid_request", "metadata: too big", [{"field": "metadata", "message": "x"}]
    )
    assert describe(unflagged) == "metadata: too big (400 invalid_request)"
    over = BrokerAPIError(
        402,
        "budget_exceeded",
        "the job's estimate of 0.25 USD does not fit the team's budget",
        {"estimated_cost_usd": "0.250000", "remaining_usd": {"studio:day:2026-12-03": "0.010000"}},
    )
    assert describe(over).endswith("(402 budget_exceeded); 0.010000 USD left in the day 2026-12-03")


@pytest.mark.parametrize(
    ("module", "acceptance", "submit"),
    [
        (
            doitong,
            DOITONG_ACCEPTANCE,
            lambda image: (
                "/v1/image_to_video",
                {"service": "runway-i2v", "prompt": "turn", "imageUrl": image},
                {"X-API-Key": "k"},
            ),
        ),
        (
            muvi,
            MUVI_ACCEPTANCE,
            lambda image: (
                "/v1/jobs/submit",
                {"model": "runway/gen-4/image-to-video", "input": {"prompt": "turn", "image_url": image}},
                {"Authorization": "Bearer k"},
            ),
        ),
    ],
)
async def test_url_only_providers_emulators_take_what_their_adapters_send(
    module: Any, acceptance: Any, submit: Any
) -> None:
    # The providers' pages document an image URL and no data URI; the adapters declare just that.
    assert acceptance.url and acceptance.data_uri_max_bytes is None and acceptance.file_max_bytes is None
    emulator = (
        module.DoitongEmulator(api_keys=["k"]) if module is doitong else module.MuviEmulator(api_keys=["k"])
    )
    async with TestClient(TestServer(module.create_app(emulator))) as client:
        for image, accepted in ((HOSTED, True), ("https://img.example/a.png", True), (DATA_URI, False)):
            path, body, headers = submit(image)
            response = await client.post(path, json=body, headers=headers)
            assert (response.status < 300) is accepted, (image, response.status, await response.text())


async def test_a_second_sandbox_on_one_sqlite_store_is_refused_and_the_claim_ends_with_the_first(
    tmp_path: Path,
) -> None:
    settings = Settings(store_url=f"sqlite:///{tmp_path}/sandbox/broker.db")
    async with claim_store(settings, "the sandbox at http://127.0.0.1:1 (pid 1)"):
        with pytest.raises(CommandFailed) as refused:
            async with claim_store(settings, "the sandbox at http://127.0.0.1:2 (pid 2)"):
                pass
        assert "the sandbox at http://127.0.0.1:1 (pid 1) already runs on the store" in str(refused.value)
    async with claim_store(settings, "the sandbox at http://127.0.0.1:2 (pid 2)"):
        pass  # the first one stopped: its claim went with it


def _imported(*argv: str) -> tuple[int, set[str]]:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "broker", *argv],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.returncode, {line.split("|")[-1].strip() for line in done.stderr.splitlines() if "|" in line}


def test_help_and_remote_commands_import_no_server_code() -> None:
    code, imported = _imported("--help")
    assert code == 0 and "broker.cli" in imported
    heavy = {"aiohttp", "asyncio", "broker.api", "broker.api.app", "structlog", "torch", "yarl"}
    assert not imported & (heavy | {"pydantic", "broker.schema"}), imported & heavy
    # A remote command loads the schema and the urllib client, still nothing of the server.
    code, imported = _imported("jobs", "--url", "http://127.0.0.1:9", "--key", "k")
    assert code == Exit.UNAVAILABLE and "broker.sync_client" in imported
    assert not imported & heavy, imported & heavy
