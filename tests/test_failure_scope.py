"""What a failed attempt means for the rest of its job (adapters.failures), and the quote leaving out
the providers a job must not go back to."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from adapters.base import ImageInput, RenderTask
from adapters.emulators.runway import RunwayEmulator
from adapters.emulators.runway import create_app as create_runway
from adapters.errors import (
    AuthFailed,
    ContentRejected,
    GenerationFailed,
    InsufficientFunds,
    OutputInvalid,
    ProviderError,
    ProviderUnavailable,
    RateLimited,
    Rejected,
    RequestInvalid,
    SubmissionUncertain,
)
from adapters.failures import Health, Scope, classify, providers_to_exclude
from adapters.runway import RunwayAdapter
from broker.appkeys import ROUTER
from broker.schema import Attempt, AttemptStatus, ErrorCode, JobError, JobRequest
from tests.support.adapters import FakeTime, context, serving
from tests.support.deployment import fake_config, fake_route


@pytest.mark.parametrize(
    ("error", "scope", "health"),
    [
        (RateLimited("429", retry_after_s=60), Scope.PROVIDER, Health.PROVIDER),
        (ProviderUnavailable("503"), Scope.PROVIDER, Health.PROVIDER),
        (AuthFailed("401"), Scope.PROVIDER, Health.PROVIDER),
        (InsufficientFunds("402"), Scope.PROVIDER, Health.PROVIDER),
        (RequestInvalid("400 Validation of body failed"), Scope.ROUTE, Health.ROUTE),
        (GenerationFailed("failed: blocked"), Scope.PROVIDER, Health.NONE),
        (ContentRejected("SAFETY.INPUT.TEXT"), Scope.JOB, Health.NONE),
        (Rejected("ASSET.INVALID"), Scope.JOB, Health.NONE),
        (SubmissionUncertain("lost answer"), Scope.JOB, Health.NONE),
        (OutputInvalid("empty output"), Scope.ROUTE, Health.PROVIDER),
        (ProviderError("unknown"), Scope.ROUTE, Health.PROVIDER),
    ],
)
def test_each_failure_reaches_as_far_as_its_table_row(
    error: ProviderError, scope: Scope, health: Health
) -> None:
    rule = classify(error)
    assert (rule.scope, rule.health) == (scope, health)
    assert rule.falls_back is (scope is not Scope.JOB)
    assert rule.defect is isinstance(error, RequestInvalid)
    assert classify(error.code) == rule  # a stored attempt's code reads the same
    # The class attribute the runner reads today agrees with the table.
    assert error.fallback is rule.falls_back


def _attempt(provider: str, model: str, code: ErrorCode | None, status: AttemptStatus) -> Attempt:
    error = JobError(code=code, message="x") if code is not None else None
    now = datetime.now(UTC)
    return Attempt(
        id=f"{provider}-{model}",
        job_id="j1",
        provider=provider,
        model=model,
        status=status,
        started_at=now,
        error=error,
    )


def test_only_provider_level_failures_exclude_their_provider() -> None:
    attempts = [
        _attempt("pixelapi", "seedance", ErrorCode.PROVIDER_UNAVAILABLE, AttemptStatus.FAILED),
        _attempt("runway", "gen4_turbo", ErrorCode.REQUEST_INVALID, AttemptStatus.FAILED),
        _attempt("muvi", "m", ErrorCode.INSUFFICIENT_FUNDS, AttemptStatus.FAILED),
        _attempt("fal", "f", ErrorCode.OUTPUT_INVALID, AttemptStatus.FAILED),
        _attempt("doitong", "d", None, AttemptStatus.RUNNING),
    ]
    assert providers_to_exclude(attempts) == {"pixelapi", "muvi"}


async def test_a_runway_validation_400_is_a_route_defect_not_a_stop(tmp_path: Path) -> None:
    # gen4.5 requires promptText; a text-less image job sent there is the broker's own mistake.
    emulator = RunwayEmulator(api_keys=("rw",))
    request = JobRequest(image_url="https://img.example/cat.png", duration_s=5)
    image = ImageInput(content_type="image/png", url="https://img.example/cat.png")
    async with serving(create_runway(emulator)) as server, aiohttp.ClientSession() as session:
        ctx = context("runway", str(server.make_url("")), session, tmp_path, FakeTime(), api_key="rw")
        with pytest.raises(RequestInvalid) as raised:
            await RunwayAdapter(ctx).submit(
                RenderTask(attempt_id="a1", model="gen4.5", request=request, image=image)
            )
    assert raised.value.status == 400 and "Validation of body failed" in str(raised.value)
    assert classify(raised.value).scope is Scope.ROUTE and classify(raised.value).defect
    assert emulator.submit_count() == 1  # a 400 is not retried


def _two_providers() -> Any:
    config = fake_config()
    raw = config.model_dump(mode="json", exclude_none=True)
    raw["routes"].append(fake_route("cheap", "c2", "0.20"))
    return type(config).model_validate(raw)


async def test_the_quote_leaves_out_every_route_of_an_excluded_provider(make_client: Any) -> None:
    client = await make_client(_two_providers())
    request = JobRequest(prompt="waves")
    router = client.app[ROUTER]
    plain = await router.quote("growth", request)
    assert plain.chosen is not None and plain.chosen.route.key == "cheap/c1"
    after_route = await router.quote("growth", request, exclude_routes={"cheap/c1"})
    assert after_route.chosen is not None and after_route.chosen.route.key == "cheap/c2"
    after_provider = await router.quote(
        "growth", request, exclude_routes={"cheap/c1"}, exclude_providers={"cheap"}
    )
    assert after_provider.chosen is not None and after_provider.chosen.route.key == "dear/d1"
    reasons = {(r.provider, r.model): r.reasons for r in after_provider.rejected}
    assert any("already failed this job" in reason for reason in reasons[("cheap", "c2")])
