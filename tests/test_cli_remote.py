"""The remote commands (`broker submit/quote/jobs/status/cancel/download/pricing`) against the real app.

The CLI is synchronous, so each command runs in a thread while the app serves on the test's loop.
"""

from __future__ import annotations

import asyncio
import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from adapters.errors import ContentRejected
from broker.cli import _parser
from broker.cli.exits import Exit
from broker.cli.progress import CLEAR_LINE
from broker.cli.remote import run_remote
from broker.cli.submit import Console, submit
from broker.sync_client import SyncBrokerClient
from tests.support.adapters import png_bytes as png
from tests.support.deployment import GROWTH_KEY, STUDIO_KEY
from tests.support.fakes import FakeProvider

SERVER_LOG = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \[")


class Captured:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err


@pytest.fixture
async def broker(make_client: Any) -> str:
    server = await make_client()
    return str(server.make_url("")).rstrip("/")


async def cli(capsys: pytest.CaptureFixture[str], url: str, *argv: str, key: str = GROWTH_KEY) -> Captured:
    """Run one remote command in a thread; its exit code and what it printed."""
    args = _parser().parse_args([*argv, "--url", url])
    code = await asyncio.to_thread(run_remote, args.remote, args, {"BROKER_API_KEY": key})
    out, err = capsys.readouterr()
    return Captured(code, _without_server_logs(out), _without_server_logs(err))


def _without_server_logs(text: str) -> str:
    """The app under test logs to the same captured stdout; keep only what the command printed."""
    return "".join(line for line in text.splitlines(keepends=True) if not SERVER_LOG.match(line))


async def test_submit_wait_saves_the_mp4_and_prints_progress_lines(
    broker: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    image = tmp_path / "still.png"
    image.write_bytes(png())
    out = tmp_path / "clip.mp4"
    done = await cli(
        capsys,
        broker,
        "submit",
        str(image),
        "--prompt",
        "pan left",
        "--wait",
        "-o",
        str(out),
        "--poll",
        "0.05",
    )
    assert done.code == Exit.OK, done.err
    assert out.read_bytes()[4:8] == b"ftyp" and not out.with_name("clip.mp4.part").exists()
    # Not a terminal: plain lines, one per change, never the in-place redraw.
    assert CLEAR_LINE not in done.out
    assert any(line.startswith("succeeded cheap/c1  attempt 1") for line in done.out.splitlines())
    assert "cost 0.100000 USD" in done.out and f"{out}:" in done.out


async def test_submit_without_wait_prints_the_job_id_for_scripts(
    broker: str, capsys: pytest.CaptureFixture[str]
) -> None:
    done = await cli(capsys, broker, "submit", "--prompt", "a harbour", "--idempotency-key", "k-7")
    again = await cli(capsys, broker, "submit", "--prompt", "a harbour", "--idempotency-key", "k-7")
    assert done.code == again.code == Exit.OK
    assert done.out.strip().startswith("job_") and done.out == again.out


async def test_a_failed_job_exits_1_with_one_line(
    broker: str, capsys: pytest.CaptureFixture[str], providers: dict[str, FakeProvider], tmp_path: Path
) -> None:
    providers["cheap"].script.fail_with = ContentRejected("SAFETY.INPUT.TEXT", provider="cheap")
    done = await cli(
        capsys,
        broker,
        "submit",
        "--prompt",
        "x",
        "--wait",
        "--poll",
        "0.05",
        "-o",
        str(tmp_path / "never.mp4"),
    )
    assert done.code == Exit.JOB_FAILED
    errors = [line for line in done.err.splitlines() if line.startswith("broker:")]
    assert len(errors) == 1 and "failed" in errors[0] and "(content_rejected)" in errors[0]
    assert not (tmp_path / "never.mp4").exists()


async def test_quote_lists_routes_cheapest_first_and_reasons(
    broker: str, capsys: pytest.CaptureFixture[str]
) -> None:
    both = await cli(capsys, broker, "quote", "--prompt", "x")
    assert both.code == Exit.OK
    lines = both.out.splitlines()
    assert lines[1].split() == ["*", "cheap", "c1", "0.100000", "0", "30", "standard"]
    assert lines[2].split()[:3] == ["dear", "d1", "0.500000"]
    capped = await cli(capsys, broker, "quote", "--prompt", "x", "--max-cost", "0.20")
    assert "rejected:" in capped.out and "dear/d1: cost 0.500000 USD above max_cost_usd" in capped.out
    none = await cli(capsys, broker, "quote", "--prompt", "x", "--max-cost", "0.01")
    assert none.code == Exit.NO_ROUTE and "no route can serve this job" in none.out
    refused = await cli(capsys, broker, "submit", "--prompt", "x", "--max-cost", "0.01")
    assert refused.code == Exit.NO_ROUTE and refused.err.count("\n") == 1


async def test_each_failure_class_has_its_exit_code(
    broker: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    wrong_key = await cli(capsys, broker, "jobs", key="not-a-key")
    assert wrong_key.code == Exit.AUTH and wrong_key.err.startswith("broker: the API key is not valid (401")
    missing = await cli(capsys, broker, "status", "job_nope")
    assert missing.code == Exit.NOT_FOUND and missing.err.count("\n") == 1
    bad = await cli(capsys, broker, "submit", "--prompt", "x", "--duration", "99")
    assert bad.code == Exit.USAGE and "invalid_request" in bad.err
    no_file = await cli(capsys, broker, "submit", str(tmp_path / "absent.png"), "--prompt", "x")
    assert no_file.code == Exit.USAGE and "no such image file" in no_file.err
    down = await cli(capsys, "http://127.0.0.1:9", "jobs")
    assert down.code == Exit.UNAVAILABLE and down.err.startswith("broker: cannot reach the broker")
    for result in (wrong_key, missing, bad, no_file, down):
        assert GROWTH_KEY not in result.err and "Traceback" not in result.err


async def test_jobs_status_cancel_download_and_pricing(
    broker: str, capsys: pytest.CaptureFixture[str], providers: dict[str, FakeProvider], tmp_path: Path
) -> None:
    finished = await cli(
        capsys, broker, "submit", "--prompt", "x", "--wait", "--poll", "0.05", "-o", str(tmp_path / "a.mp4")
    )
    assert finished.code == Exit.OK
    providers["cheap"].script.polls_to_finish = 10_000
    pending = (await cli(capsys, broker, "submit", "--prompt", "y")).out.strip()
    listed = await cli(capsys, broker, "jobs")
    rows = listed.out.splitlines()
    assert rows[0].split()[:4] == ["id", "team", "status", "route"] and rows[1].split()[0] == pending
    assert len(rows) == 3
    only_running = await cli(capsys, broker, "jobs", "--status", "succeeded")
    assert len(only_running.out.splitlines()) == 2
    shown = await cli(capsys, broker, "status", pending)
    assert shown.out.startswith(f"{pending}  ") and "route     cheap/c1" in shown.out
    cancelled = await cli(capsys, broker, "cancel", pending)
    assert cancelled.code == Exit.OK and cancelled.out.startswith(f"{pending}: ")
    first = listed.out.splitlines()[2].split()[0]
    saved = await cli(capsys, broker, "download", first, "-o", str(tmp_path / "b.mp4"))
    assert saved.code == Exit.OK and (tmp_path / "b.mp4").read_bytes() == (tmp_path / "a.mp4").read_bytes()
    studio = await cli(capsys, broker, "status", first, key=STUDIO_KEY)
    assert studio.code == Exit.NOT_FOUND
    prices = await cli(capsys, broker, "pricing")
    assert prices.out.splitlines()[1].split()[:2] == ["cheap", "c1"] and "0.100000 - 0.100000" in prices.out


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _ticking_clock(step: float) -> Iterator[float]:
    now = 0.0
    while True:
        yield now
        now += step


async def test_live_progress_redraws_every_tick_with_the_elapsed_time(
    broker: str, providers: dict[str, FakeProvider], tmp_path: Path
) -> None:
    providers["cheap"].script.polls_to_finish = 3
    args = _parser().parse_args(["submit", "--prompt", "x", "-o", str(tmp_path / "c.mp4"), "--poll", "0.05"])
    ticks = _ticking_clock(0.5)
    terminal = FakeTerminal()
    console = Console(out=terminal, err=io.StringIO(), clock=lambda: next(ticks), sleep=lambda s: None)

    def run() -> int:
        with SyncBrokerClient(broker, GROWTH_KEY) as client:
            return submit(client, args, console)

    assert await asyncio.to_thread(run) == Exit.OK
    frames = terminal.getvalue().split(CLEAR_LINE)[1:]
    assert len(frames) >= 2
    # Each redraw carries the time elapsed so far against the route's expected 30 s.
    elapsed = [float(frame.split("s / ~30s")[0].split()[-1]) for frame in frames]
    assert elapsed == sorted(elapsed) and elapsed[-1] > elapsed[0]
    assert frames[-1].startswith("succeeded cheap/c1")


async def test_ctrl_c_asks_and_cancels_or_leaves_the_job_running(
    broker: str, providers: dict[str, FakeProvider], tmp_path: Path
) -> None:
    providers["cheap"].script.polls_to_finish = 10_000

    def interrupt(seconds: float) -> None:
        raise KeyboardInterrupt

    def run(answer: bool) -> tuple[int, str]:
        args = _parser().parse_args(["submit", "--prompt", "x", "--wait"])
        asked: list[str] = []

        def ask(question: str) -> bool:
            asked.append(question)
            return answer

        console = Console(out=io.StringIO(), err=io.StringIO(), sleep=interrupt, ask=ask)
        with SyncBrokerClient(broker, GROWTH_KEY) as client:
            code = submit(client, args, console)
            job_id = asked[0].split()[2].rstrip("?")
            return code, client.get(job_id).status.value

    code, status = await asyncio.to_thread(run, False)
    assert code == Exit.INTERRUPTED and status in ("queued", "running")
    code, status = await asyncio.to_thread(run, True)
    assert code == Exit.CANCELLED

    def settled() -> str:
        with SyncBrokerClient(broker, GROWTH_KEY) as client:
            jobs, _ = client.list(limit=1)
            return client.wait(jobs[0].id, poll_s=0.02, timeout_s=30).status.value

    assert await asyncio.to_thread(settled) == "cancelled"
