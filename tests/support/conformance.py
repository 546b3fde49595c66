"""The providers the conformance suite runs over, one entry each, and the rig it runs them on.

Adding a provider is one entry in `PROVIDERS`: its emulator class and app, how its adapter is built
on a context, and one render task it can take. Everything else the suite checks (faults, cancel
terms, cost unit, webhooks) is read from the adapter's `spec` and the emulator's fault plan.
The local backend has no emulator; its entry renders on this machine in real time.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from adapters import doitong, fal, muvi, pixelapi, replicate, runway
from adapters.base import Adapter, AdapterContext, ImageInput, RenderTask, TaskHandle, TaskState, TaskStatus
from adapters.emulators import doitong as doitong_emulator
from adapters.emulators import fal as fal_emulator
from adapters.emulators import muvi as muvi_emulator
from adapters.emulators import pixelapi as pixelapi_emulator
from adapters.emulators import replicate as replicate_emulator
from adapters.emulators import runway as runway_emulator
from adapters.emulators.emulator import ProviderEmulator
from adapters.polling import poll_until_done
from broker.schema import JobRequest
from tests.support.adapters import FakeTime, context, png_bytes, serving

KEY = "conformance-key"
SECRET = "conformance-webhook-secret"
# Standard Webhooks secrets are a base64 key after `whsec_` (Replicate refuses any other form).
WHSEC_SECRET = "whsec_" + base64.b64encode(SECRET.encode()).decode()
TIMEOUT_S = 0.5  # per request; a `slow` fault waits longer
SLOW_S = 1.0
IMAGE_URL = "https://img.example/still.jpg"

AdapterMaker = Callable[[AdapterContext, FakeTime], Adapter]


def image_task(model: str, image: ImageInput, webhook_url: str | None = None, **fields: Any) -> RenderTask:
    """An image-to-video render of `model`, 5 s at 16:9 unless `fields` say otherwise."""
    request = JobRequest.model_validate({"prompt": "leaves drift past", "image_url": IMAGE_URL, **fields})
    return RenderTask(attempt_id="att-1", model=model, request=request, image=image, webhook_url=webhook_url)


URL_IMAGE = ImageInput(content_type="image/*", url=IMAGE_URL)
FILE_IMAGE = ImageInput(content_type="image/jpeg", data=png_bytes(96, 64, "JPEG"))


@dataclass(frozen=True)
class HttpProvider:
    """A provider spoken to over HTTP, emulated by a real aiohttp server."""

    name: str
    emulator: Callable[..., ProviderEmulator]
    app: Callable[[Any], web.Application]
    adapter: AdapterMaker
    model: str
    image: ImageInput = URL_IMAGE
    render_s: float = 60.0
    wall_time: bool = False  # the provider speaks wall time (ETAs, webhook timestamps): muvi, replicate
    reports_cost: bool = True  # fal, and Replicate's official models on success, report none
    webhook_secret: str = SECRET


def _timed(build: Callable[..., Adapter]) -> AdapterMaker:
    return lambda ctx, fake: build(ctx, timeout_s=TIMEOUT_S)


def _wall_timed(build: Callable[..., Adapter]) -> AdapterMaker:
    """An adapter that reads Unix time (webhook timestamps, ETAs) from the rig's fake clock."""
    return lambda ctx, fake: build(ctx, timeout_s=TIMEOUT_S, wall_clock=fake.clock)


PROVIDERS: tuple[HttpProvider, ...] = (
    HttpProvider("runway", runway_emulator.RunwayEmulator, runway_emulator.create_app,
                 _timed(runway.RunwayAdapter), "gen4_turbo"),
    HttpProvider("fal", fal_emulator.FalEmulator, fal_emulator.create_app, _timed(fal.FalAdapter),
                 "fal-ai/kling-video/v2.5-turbo/pro/image-to-video", reports_cost=False),
    HttpProvider("muvi", muvi_emulator.MuviEmulator, muvi_emulator.create_app,
                 _wall_timed(muvi.MuviAdapter),
                 "runway/gen-4/image-to-video", render_s=90.0, wall_time=True),
    HttpProvider("pixelapi", pixelapi_emulator.PixelApiEmulator, pixelapi_emulator.create_app,
                 _timed(pixelapi.PixelApiAdapter), "seedance", image=FILE_IMAGE, render_s=20.0),
    HttpProvider("doitong", doitong_emulator.DoitongEmulator, doitong_emulator.create_app,
                 _timed(doitong.DoitongAdapter), "runway-i2v"),
    HttpProvider("replicate", replicate_emulator.ReplicateEmulator, replicate_emulator.create_app,
                 _wall_timed(replicate.ReplicateAdapter),
                 "minimax/video-01", wall_time=True, reports_cost=False, webhook_secret=WHSEC_SECRET),
)
LOCAL = "local"
ALL = (*(p.name for p in PROVIDERS), LOCAL)
BY_NAME = {p.name: p for p in PROVIDERS}


@dataclass
class Rig:
    """One provider under test: its adapter, and (HTTP providers) its emulator on fake time."""

    name: str
    adapter: Adapter
    tmp: Path
    task: Callable[..., RenderTask]
    fake: FakeTime | None = None
    emulator: ProviderEmulator | None = None
    render_s: float = 0.0
    provider: HttpProvider | None = None
    context: Callable[..., AdapterContext] | None = None

    @property
    def http(self) -> tuple[ProviderEmulator, FakeTime]:
        assert self.emulator is not None and self.fake is not None, f"{self.name} has no emulator"
        return self.emulator, self.fake

    async def finish(self, handle: TaskHandle) -> TaskStatus:
        """Poll until the task ends: on fake time against an emulator, in real time locally."""
        if self.fake is not None:
            return await poll_until_done(self.adapter, handle, clock=self.fake.clock, sleep=self.fake.sleep)
        async with asyncio.timeout(120):
            while not (status := await self.adapter.status(handle)).state.terminal:
                await asyncio.sleep(0.02)
        return status

    async def task_in(self, state: TaskState) -> TaskHandle:
        """A task the provider reads as queued or running (where its protocol shows the state)."""
        if self.fake is not None:
            handle = (await self.adapter.submit(self.task())).handle
            if state is TaskState.RUNNING:
                self.fake.now += self.render_s / 2
            return handle
        if state is TaskState.QUEUED:  # one render at a time: the second waits behind the first
            await self.adapter.submit(self.task(attempt_id="blocker"))
            return (await self.adapter.submit(self.task())).handle
        handle = (await self.adapter.submit(self.task())).handle
        async with asyncio.timeout(60):
            while (await self.adapter.status(handle)).state is not TaskState.RUNNING:
                await asyncio.sleep(0.005)
        return handle


@asynccontextmanager
async def http_rig(provider: HttpProvider, tmp: Path) -> AsyncIterator[Rig]:
    fake = FakeTime(start=time.time()) if provider.wall_time else FakeTime()
    emulator = provider.emulator(api_keys=(KEY,), render_seconds=provider.render_s, clock=fake.clock,
                                 webhook_secret=provider.webhook_secret, webhook_tick_s=3600)
    async with serving(provider.app(emulator)) as server, aiohttp.ClientSession() as session:
        base_url = str(server.make_url(""))

        def make_context(**fields: Any) -> AdapterContext:
            options: dict[str, Any] = {"api_key": KEY, "webhook_secret": provider.webhook_secret, **fields}
            return context(provider.name, base_url, session, tmp, fake, **options)

        def task(webhook_url: str | None = None, attempt_id: str = "att-1") -> RenderTask:
            render = image_task(provider.model, provider.image, webhook_url)
            return RenderTask(attempt_id, render.model, render.request, render.image, render.webhook_url)

        adapter = provider.adapter(make_context(), fake)
        yield Rig(
            provider.name, adapter, tmp, task, fake, emulator, provider.render_s, provider, make_context
        )


@asynccontextmanager
async def local_rig(tmp: Path) -> AsyncIterator[Rig]:
    from adapters.local import MODEL, LocalAdapter
    from local_backend.assets import SAMPLE_IMAGE

    image = ImageInput(content_type="image/png", data=SAMPLE_IMAGE.read_bytes())
    adapter = LocalAdapter(tmp / "data", concurrency=1)

    def task(webhook_url: str | None = None, attempt_id: str = "att-1") -> RenderTask:
        fields = {"image_upload": "0" * 64, "duration_s": 1, "aspect_ratio": "1:1"}
        request = JobRequest.model_validate(fields)
        return RenderTask(attempt_id=attempt_id, model=MODEL, request=request, image=image)

    try:
        yield Rig(LOCAL, adapter, tmp, task)
    finally:
        await adapter.close()


def rig_for(name: str, tmp: Path) -> AbstractAsyncContextManager[Rig]:
    """The rig of provider `name`."""
    return local_rig(tmp) if name == LOCAL else http_rig(BY_NAME[name], tmp)
