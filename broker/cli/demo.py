"""`broker demo`: start the broker in-process on the embedded defaults, animate the bundled sample image
on the local backend through the real HTTP API (with the client SDK), write the MP4, print the job."""

from __future__ import annotations

import json
import os
import secrets
import sys
import time
from pathlib import Path

from aiohttp import web

from broker.api.app import create_app
from broker.cli import CommandFailed
from broker.cli.serve import check_store, load_settings, start_site
from broker.client import BrokerClient
from broker.config import ConfigError, load_config
from broker.observability.logging import configure_logging
from broker.schema import BrokerError, Job
from local_backend.assets import SAMPLE_IMAGE

DEMO_TEAM_ENV = "BROKER_KEY_GROWTH"


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class _Progress:
    """Prints a line whenever the job or its attempt changes state."""

    def __init__(self) -> None:
        self.started, self.last = time.monotonic(), ""

    def __call__(self, job: Job) -> None:
        attempt = job.attempts[-1].status.value if job.attempts else "-"
        state = f"job {job.status.value:<9} attempt {attempt}"
        if state != self.last:
            _say(f"  {time.monotonic() - self.started:5.1f}s  {state}")
            self.last = state


async def run_demo(out: Path, prompt: str, duration: int) -> int:
    """Run the demo; returns the process exit status."""
    settings = load_settings(port=0)
    try:
        config = load_config(settings.config)
    except ConfigError as exc:
        raise CommandFailed(f"bad configuration: {exc}", exit_code=2) from None
    env = dict(os.environ)
    env.setdefault(DEMO_TEAM_ENV, secrets.token_urlsafe(24))
    configure_logging("warning", [env[DEMO_TEAM_ENV]])
    await check_store(settings)
    runner = web.AppRunner(create_app(settings, config, env=env), access_log=None)
    try:
        await runner.setup()
    except BrokerError as exc:
        raise CommandFailed(f"cannot start: {exc.message}") from None
    try:
        await start_site(runner, "127.0.0.1", 0)
        base = f"http://127.0.0.1:{runner.addresses[0][1]}"
        _say(f"broker running at {base} (store {settings.store_url}, artifacts {settings.data_dir}/)")
        async with BrokerClient(base, env[DEMO_TEAM_ENV]) as broker:
            # The demo never spends money: it asks for the local route even when provider keys are set.
            request = {"prompt": prompt, "duration_s": duration, "constraints": {"providers": ["local"]}}
            job = await broker.submit(request, image=SAMPLE_IMAGE)
            assert job.route is not None
            _say(
                f"submitted {job.id}: {prompt!r}, {duration} s, route {job.route.provider}/{job.route.model},"
                f" estimate ${job.estimated_cost_usd}"
            )
            job = await broker.wait(job.id, poll_s=0.2, timeout_s=300, on_update=_Progress())
            if job.status.value != "succeeded" or job.output is None:
                _say(f"job ended {job.status.value}: {job.error}")
                print(job.model_dump_json(indent=2))
                return 1
            await broker.download(job.id, out)
    finally:
        await runner.cleanup()
    output, route = job.output, job.route
    assert route is not None  # a succeeded job ran on a route
    _say(f"wrote {out} ({output.bytes} bytes, {output.width}x{output.height}, {output.duration_s} s)")
    _say(f"route {route.provider}/{route.model}, cost ${job.cost_usd}")
    print(json.dumps(job.model_dump(mode="json"), indent=2))
    return 0
