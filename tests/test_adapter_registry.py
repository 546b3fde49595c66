"""The registry: every provider's factory, each adapter end to end against the sandbox's emulators."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import aiohttp
import pytest

from adapters.base import Adapter, ImageInput, RenderTask, TaskState
from adapters.emulators.sandbox import Sandbox, start_sandbox
from adapters.images import image_infeasibility
from adapters.polling import poll_until_done
from adapters.registry import FACTORIES, factory_for
from broker.schema import JobRequest
from pricing.units import CostUnit, ReportedCost
from tests.support.adapters import FakeTime, context, is_mp4, png_bytes

REMOTE = ("runway", "fal", "muvi", "doitong", "pixelapi", "replicate")
MODELS = {
    "runway": "gen4_turbo",
    "fal": "fal-ai/kling-video/v2.5-turbo/pro/image-to-video",
    "muvi": "runway/gen-4/image-to-video",
    "doitong": "runway-i2v",
    "pixelapi": "seedance",
    "replicate": "kwaivgi/kling-v2.0",
}
# What each provider reports for 5 s of that model, in its own unit; fal reports nothing.
REPORTED = {
    "runway": ReportedCost(Decimal(25), CostUnit.CREDITS),
    "fal": None,
    "muvi": ReportedCost(Decimal(500_000), CostUnit.MICRO_CENTS),
    "doitong": ReportedCost(Decimal(50), CostUnit.CREDITS),
    "pixelapi": ReportedCost(Decimal(55), CostUnit.CREDITS),
    "replicate": None,  # an official model billed per output: the quote is booked
}
PNG = png_bytes(80, 60)


def test_every_provider_has_a_factory_and_unknown_names_say_what_is_known() -> None:
    assert set(FACTORIES) == {*REMOTE, "local"}
    with pytest.raises(KeyError, match="runway"):
        factory_for("sora")


def test_importing_the_registry_does_not_import_torch() -> None:
    code = "import sys, adapters.registry; sys.exit(1 if 'torch' in sys.modules else 0)"
    result = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parent.parent,
                            capture_output=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr.decode()


@pytest.fixture
async def sandbox_rig(tmp_path: Path) -> AsyncIterator[tuple[Sandbox, FakeTime, aiohttp.ClientSession]]:
    fake = FakeTime(start=time.time())
    sandbox = await start_sandbox(render_seconds=30, clock=fake.clock)
    async with sandbox, aiohttp.ClientSession() as session:
        yield sandbox, fake, session


def built(provider: str, sandbox: Sandbox, fake: FakeTime, session: aiohttp.ClientSession,
          tmp_path: Path) -> Adapter:
    endpoint = sandbox.endpoints[provider]
    ctx = context(provider, endpoint.base_url, session, tmp_path, fake, api_key=endpoint.api_key,
                  webhook_secret=endpoint.webhook_secret)
    return factory_for(provider)(ctx)


@pytest.mark.parametrize("provider", REMOTE)
async def test_each_factory_renders_against_its_sandbox_emulator(
    provider: str, sandbox_rig: tuple[Sandbox, FakeTime, aiohttp.ClientSession], tmp_path: Path
) -> None:
    sandbox, fake, session = sandbox_rig
    adapter = built(provider, sandbox, fake, session, tmp_path)
    assert adapter.provider == provider
    # The image as the runner hands it over: the URL where the provider takes one, else the bytes.
    url = "https://img.example/still.png"
    by_url = adapter.spec.image_acceptance.url
    image = ImageInput("image/png", url=url) if by_url else ImageInput("image/png", PNG)
    request = JobRequest(prompt="a slow push in", image_url=url)
    submission = await adapter.submit(RenderTask(attempt_id=f"att-{provider}", model=MODELS[provider],
                                                 request=request, image=image))
    final = await poll_until_done(adapter, submission.handle, clock=fake.clock, sleep=fake.sleep,
                                  estimated_seconds=submission.estimated_seconds)
    assert final.state is TaskState.SUCCEEDED
    assert final.reported_cost == REPORTED[provider]
    dest = tmp_path / f"{provider}.mp4"
    await adapter.fetch_output(final, dest)
    assert is_mp4(dest)


@pytest.mark.parametrize(
    ("provider", "upload_reason"),
    [("runway", None), ("fal", None), ("pixelapi", None), ("muvi", "URL"), ("doitong", "URL"),
     ("replicate", "262144-byte limit")],  # data URLs only up to 256 KB
)
async def test_which_providers_can_take_an_uploaded_image(
    provider: str, upload_reason: str | None,
    sandbox_rig: tuple[Sandbox, FakeTime, aiohttp.ClientSession], tmp_path: Path,
) -> None:
    sandbox, fake, session = sandbox_rig
    acceptance = built(provider, sandbox, fake, session, tmp_path).spec.image_acceptance
    reason = image_infeasibility(acceptance, has_url=False, has_bytes=True, size_bytes=2 * 1024 * 1024)
    if upload_reason is None:
        assert reason is None
    else:
        assert reason is not None and upload_reason in reason
    assert image_infeasibility(acceptance, has_url=True, has_bytes=False, size_bytes=None) is None
