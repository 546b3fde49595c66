"""Fuzzing the served API: schemathesis generates requests from `/openapi.json` — valid ones and ones
that break the schema — for every operation, with a team key and with the admin key, against a broker
listening on 127.0.0.1. No request may get a 5xx. The run is bounded (`FUZZ_EXAMPLES` per operation
and mode) to fit CI; it prints its figures."""

from __future__ import annotations

import asyncio
import os
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from broker.api.app import create_app
from broker.settings import Settings
from tests.support.deployment import ADMIN_KEY, GROWTH_KEY, TEST_ENV, fake_config
from tests.support.fakes import FakeProvider

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))


class LiveBroker:
    """The broker app served on 127.0.0.1 from an event loop in a thread of its own."""

    def __init__(self, data: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        settings_ = Settings(
            store_url=f"sqlite:///{data}/broker.db",
            data_dir=data / "artifacts",
            workers=2,
            webhook_secret="fuzz-webhook-secret",
        )
        factories = {name: FakeProvider(name).build for name in ("cheap", "dear")}
        self.runner = web.AppRunner(create_app(settings_, fake_config(), env=TEST_ENV, factories=factories))
        self.url = ""

    def _run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=60)

    def start(self) -> None:
        self.thread.start()
        self._run(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self._run(site.start())
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"

    def stop(self) -> None:
        self._run(self.runner.cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveBroker]:
    live = LiveBroker(tmp_path_factory.mktemp("fuzz"))
    live.start()
    try:
        yield live
    finally:
        live.stop()


def _probe(operation: Any, mode: GenerationMode, base: str, key: str, seen: Counter[str]) -> None:
    """Send `EXAMPLES` generated requests for one operation; fail on the first 5xx."""

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    def probe(case: Any) -> None:
        response = case.call(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30)
        seen["requests"] += 1
        seen[f"{response.status_code // 100}xx"] += 1
        assert response.status_code < 500, (
            f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:500]}\n"
            f"body: {case.body!r:.500}\nquery: {case.query}\nheaders: {case.headers}"
        )

    try:
        probe()
    except Unsatisfiable:  # no request that breaks this operation's schema can be built
        seen["unsatisfiable"] += 1


@pytest.mark.parametrize("key", [GROWTH_KEY, ADMIN_KEY], ids=["team", "admin"])
def test_no_generated_request_gets_a_5xx(
    broker: LiveBroker, key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    document = requests.get(f"{broker.url}/openapi.json", timeout=10).json()
    schema = schemathesis.openapi.from_dict(document)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    seen: Counter[str] = Counter()
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            _probe(operation, mode, broker.url, key, seen)
    with capsys.disabled():
        figures = ", ".join(f"{name} {count}" for name, count in sorted(seen.items()))
        print(
            f"\nfuzz ({'admin' if key == ADMIN_KEY else 'team'} key): {len(operations)} operations, {figures}"
        )
    assert seen["requests"] >= len(operations) and seen["5xx"] == 0
    # The broker still works afterwards: a normal job is accepted and succeeds.
    headers = {"Authorization": f"Bearer {GROWTH_KEY}"}
    job = requests.post(
        f"{broker.url}/v1/jobs", json={"prompt": "after the fuzz"}, headers=headers, timeout=10
    )
    assert job.status_code == 202, job.text
    for _ in range(500):
        done = requests.get(f"{broker.url}/v1/jobs/{job.json()['id']}", headers=headers, timeout=10).json()
        if done["status"] in ("succeeded", "failed"):
            break
        threading.Event().wait(0.02)
    assert done["status"] == "succeeded", done
