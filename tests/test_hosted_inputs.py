"""Hosted inputs: signed, expiring URLs of a job's uploaded or `data:` image for URL-only providers,
served without an auth header while the job runs; and the quote's view of URL-only providers."""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from pydantic import ValidationError

from adapters.base import ImageAcceptance, ImageInput
from adapters.doitong import IMAGE_ACCEPTANCE as DOITONG_ACCEPTANCE
from adapters.muvi import IMAGE_ACCEPTANCE as MUVI_ACCEPTANCE
from adapters.pixelapi import IMAGE_ACCEPTANCE as PIXELAPI_ACCEPTANCE
from broker.api.app import create_app
from broker.appkeys import ARTIFACTS, STORE
from broker.cli.sandbox import start_sandboxed
from broker.config import load_config
from broker.jobs.hosted_inputs import InputHosting, hosted_image, sign_input_url, verify
from broker.schema import JobStatus
from broker.settings import Settings
from tests.support.adapters import CONFIG_PATH
from tests.support.adapters import png_bytes as png
from tests.support.deployment import STUDIO_KEY, TEST_ENV, auth, fast_sleep
from tests.support.factories import job_record

SECRET = "s" * 40
PUBLIC = "https://broker.example.com"


def _query(url: str) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(urlsplit(url).query).items()}


def test_a_signed_url_verifies_until_it_expires_and_not_when_tampered() -> None:
    url = sign_input_url(PUBLIC, "job_1", 1_000, SECRET)
    assert url.startswith(f"{PUBLIC}/v1/inputs/job_1?")
    query = _query(url)
    assert verify("job_1", query["expires"], query["sig"], SECRET, now=999) is None
    assert verify("job_1", query["expires"], query["sig"], SECRET, now=1_001) == "the input URL has expired"
    assert "signature" in (verify("job_2", query["expires"], query["sig"], SECRET, now=999) or "")
    assert "signature" in (verify("job_1", "2000", query["sig"], SECRET, now=999) or "")
    assert "signature" in (verify("job_1", query["expires"], query["sig"], "t" * 40, now=999) or "")
    assert verify("job_1", None, query["sig"], SECRET, now=999) is not None
    assert verify("job_1", "-5", query["sig"], SECRET, now=999) is not None


def test_only_url_only_providers_get_a_hosted_url_and_it_outlives_their_deadline() -> None:
    hosting = InputHosting(PUBLIC, SECRET)
    image = ImageInput(content_type="image/png", data=b"png")
    for acceptance in (MUVI_ACCEPTANCE, DOITONG_ACCEPTANCE):
        hosted = hosted_image(image, acceptance, job_id="job_1", hosting=hosting, now=100.0, deadline_s=900)
        assert hosted.data == b"png" and hosted.url is not None
        assert int(_query(hosted.url)["expires"]) > 100 + 900
    assert hosted_image(image, PIXELAPI_ACCEPTANCE, job_id="j", hosting=hosting, now=0, deadline_s=1) is image
    takes_both = ImageAcceptance(url=True, data_uri_max_bytes=5_000_000)
    assert hosted_image(image, takes_both, job_id="j", hosting=hosting, now=0, deadline_s=1) is image
    assert hosted_image(image, MUVI_ACCEPTANCE, job_id="j", hosting=None, now=0, deadline_s=1) is image


def test_the_signing_secret_is_long_enough_and_never_shown() -> None:
    with pytest.raises(ValidationError):
        Settings(input_signing_secret="short")
    settings = Settings(input_signing_secret=SECRET)
    assert SECRET not in repr(settings) and SECRET not in str(settings.model_dump())


async def _app(aiohttp_client: Any, tmp_path: Path, **settings: Any) -> tuple[Any, Any]:
    sandbox, config, env = await start_sandboxed(load_config(CONFIG_PATH), TEST_ENV, render_seconds=0.05)
    base = Settings(store_url=f"sqlite:///{tmp_path}/b.db", data_dir=tmp_path / "data", **settings)
    client = await aiohttp_client(create_app(base, config, env=env, sleep=fast_sleep))
    return client, sandbox


async def _running_job(client: Any, **request: Any) -> str:
    """A job held by another replica's lease, so this app's runner leaves it running."""
    record = job_record(team="studio", status=JobStatus.RUNNING, **request)
    record = record.model_copy(update={"lease_owner": "elsewhere", "lease_until": time.time() + 3600})
    created, _ = await client.app[STORE].create_job(record)
    return str(created.id)


async def test_a_running_jobs_upload_is_served_with_its_signature_alone(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    client, sandbox = await _app(aiohttp_client, tmp_path, public_url=PUBLIC, input_signing_secret=SECRET)
    try:
        image = png(64, 48)
        digest = await client.app[ARTIFACTS].save_upload(image)
        job_id = await _running_job(client, image_upload=digest)
        url = sign_input_url(PUBLIC, job_id, int(time.time()) + 60, SECRET)
        path = url.removeprefix(PUBLIC)
        served = await client.get(path)  # no Authorization header
        assert served.status == 200 and served.content_type == "image/png"
        assert await served.read() == image

        tampered = path[:-1] + ("0" if path[-1] != "0" else "1")
        assert (await client.get(tampered)).status == 403
        expired = sign_input_url(PUBLIC, job_id, int(time.time()) - 1, SECRET).removeprefix(PUBLIC)
        refused = await client.get(expired)
        assert refused.status == 403 and (await refused.json())["error"]["code"] == "forbidden"
        assert (await client.get(f"/v1/inputs/{job_id}")).status == 403
        other = sign_input_url(PUBLIC, "job_unknown", int(time.time()) + 60, SECRET).removeprefix(PUBLIC)
        assert (await client.get(other)).status == 404
    finally:
        await sandbox.close()


async def test_a_data_uri_is_served_and_an_ended_job_releases_its_input(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    client, sandbox = await _app(aiohttp_client, tmp_path, public_url=PUBLIC, input_signing_secret=SECRET)
    try:
        image = png(32, 32)
        data_uri = "data:image/png;base64," + base64.b64encode(image).decode()
        job_id = await _running_job(client, image_url=data_uri)
        path = sign_input_url(PUBLIC, job_id, int(time.time()) + 60, SECRET).removeprefix(PUBLIC)
        assert await (await client.get(path)).read() == image
        record = await client.app[STORE].get_job(job_id)
        ended = record.model_copy(
            update={"job": record.job.model_copy(update={"status": JobStatus.CANCELLED})}
        )
        await client.app[STORE].replace_job(ended)
        gone = await client.get(path)
        assert gone.status == 404 and (await gone.json())["error"]["code"] == "not_found"
    finally:
        await sandbox.close()


async def _quote_reasons(client: Any) -> dict[str, list[str]]:
    form = aiohttp.FormData({"prompt": "a lighthouse"})
    form.add_field("image", png(640, 360), filename="still.png", content_type="image/png")
    answer = await (await client.post("/v1/quotes", data=form, headers=auth(STUDIO_KEY))).json()
    feasible = {route["provider"] for route in answer["routes"]}
    reasons = {r["provider"]: r["reasons"] for r in answer["rejected"] if r["provider"] not in feasible}
    return {**reasons, **{provider: [] for provider in feasible}}


async def test_url_only_providers_are_feasible_for_uploads_only_when_the_broker_hosts_inputs(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    client, sandbox = await _app(aiohttp_client, tmp_path / "off")
    try:
        reasons = await _quote_reasons(client)
        for provider in ("muvi", "doitong"):
            assert any("BROKER_PUBLIC_URL" in reason for reason in reasons[provider]), reasons[provider]
    finally:
        await sandbox.close()
    client, sandbox = await _app(
        aiohttp_client, tmp_path / "on", public_url=PUBLIC, input_signing_secret=SECRET
    )
    try:
        reasons = await _quote_reasons(client)
        assert reasons["muvi"] == []  # muvi's routes are priced, so one is feasible
        assert reasons["doitong"] == []  # and doitong's, at its emulator's figure in the sandbox
    finally:
        await sandbox.close()
