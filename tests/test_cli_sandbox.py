"""The CLI as a user runs it: `broker serve --sandbox` in one process, `broker submit --wait` in
another under a pseudo-terminal, whose screen updates are timed as they arrive."""

from __future__ import annotations

import asyncio
import itertools
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import av
import pytest

from broker.cli.exits import Exit
from broker.cli.progress import CLEAR_LINE
from tests.support.procs import ROOT, Proc, clean_env, free_port

KEY = "sandbox-cli-key-0123456789"
SAMPLE = ROOT / "local_backend" / "assets" / "sample.png"
Reaction = Callable[[str, "subprocess.Popen[bytes]", int], None]


@pytest.fixture
async def sandbox_broker(tmp_path: Path) -> AsyncIterator[str]:
    port = free_port()
    env = clean_env(
        {
            "BROKER_KEY_GROWTH": KEY,
            "BROKER_STORE_URL": f"sqlite:///{tmp_path}/broker.db",
            "BROKER_DATA_DIR": str(tmp_path / "data"),
        }
    )
    args = [sys.executable, "-m", "broker", "serve", "--sandbox", "--port", str(port)]
    proc = Proc("broker", args, env, tmp_path / "broker.log")
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(300):
                assert proc.alive, proc.log_tail()
                try:
                    async with session.get(f"{url}/readyz") as reply:
                        if reply.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.1)
            else:
                raise AssertionError(f"broker did not get ready: {proc.log_tail()}")
        yield url
    finally:
        proc.stop()


def _run_in_pty(
    args: list[str], env: dict[str, str], cwd: Path, react: Reaction | None = None
) -> tuple[int, list[tuple[float, str]]]:
    """Run `args` on a pseudo-terminal (stdin and stdout); its exit code and each chunk it wrote, timed.
    `react` sees the screen so far after each chunk and may answer with keystrokes or a signal."""
    leader, follower = os.openpty()
    proc = subprocess.Popen(args, env=env, cwd=cwd, stdin=follower, stdout=follower, stderr=subprocess.STDOUT)
    os.close(follower)
    chunks: list[tuple[float, str]] = []
    deadline = time.monotonic() + 90
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.2)
            if ready:
                try:
                    data = os.read(leader, 4096)
                except OSError:  # the child closed the terminal
                    break
                if not data:
                    break
                chunks.append((time.monotonic(), data.decode(errors="replace")))
                if react is not None:
                    react("".join(text for _, text in chunks), proc, leader)
            elif proc.poll() is not None:
                break
        return proc.wait(timeout=10), chunks
    finally:
        os.close(leader)
        if proc.poll() is None:
            proc.kill()


async def test_submit_wait_under_a_terminal_writes_an_mp4_and_redraws_every_second(
    sandbox_broker: str, tmp_path: Path
) -> None:
    env = clean_env({"BROKER_URL": sandbox_broker, "BROKER_API_KEY": KEY})
    args = [
        sys.executable,
        "-m",
        "broker",
        "submit",
        str(SAMPLE),
        "--prompt",
        "slow push in",
        "--wait",
        "-o",
        "out.mp4",
    ]
    code, chunks = await asyncio.to_thread(_run_in_pty, args, env, tmp_path)
    screen = "".join(text for _, text in chunks)
    assert code == Exit.OK, screen
    with av.open(str(tmp_path / "out.mp4")) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.frames > 0
    redraws = [at for at, text in chunks for _ in range(text.count(CLEAR_LINE))]
    assert len(redraws) >= 3, screen
    gaps = [b - a for a, b in itertools.pairwise(redraws)]
    # Redrawn every half second: a gap of a whole second or more only on a machine busy elsewhere.
    assert max(gaps) <= 2.0, gaps
    assert "succeeded local/camera-motion  attempt 1" in screen and "out.mp4:" in screen


async def test_quote_against_the_sandbox_lists_routes_and_reasons(sandbox_broker: str) -> None:
    env = clean_env({"BROKER_URL": sandbox_broker, "BROKER_API_KEY": KEY})
    args = [sys.executable, "-m", "broker", "quote", str(SAMPLE), "--prompt", "slow push in"]
    done = await asyncio.to_thread(
        subprocess.run, args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == Exit.OK, done.stderr
    table, _, rejected = done.stdout.partition("\nrejected:\n")
    rows = [line.split() for line in table.splitlines()[1:]]
    assert rows[0][:3] == ["*", "local", "camera-motion"]
    costs = [float(row[-4]) for row in rows]
    assert costs == sorted(costs) and len(rows) > 3
    assert "runway/veo3.1: duration 5 s not supported" in rejected


async def test_ctrl_c_under_a_terminal_asks_and_cancels_the_job(sandbox_broker: str, tmp_path: Path) -> None:
    env = clean_env({"BROKER_URL": sandbox_broker, "BROKER_API_KEY": KEY})
    # runway's emulator takes seconds to render: long enough to interrupt the wait.
    args = [
        sys.executable,
        "-m",
        "broker",
        "submit",
        "--prompt",
        "a harbour",
        "--provider",
        "runway",
        "--wait",
    ]
    steps = {"interrupted": False, "answered": False}

    def react(screen: str, proc: subprocess.Popen[bytes], terminal: int) -> None:
        if not steps["interrupted"] and screen.count(CLEAR_LINE) >= 2:
            steps["interrupted"] = True
            proc.send_signal(signal.SIGINT)  # what Ctrl-C on the terminal sends
        elif not steps["answered"] and "[y/N]" in screen:
            steps["answered"] = True
            os.write(terminal, b"y\n")

    code, chunks = await asyncio.to_thread(_run_in_pty, args, env, tmp_path, react)
    screen = "".join(text for _, text in chunks)
    assert steps["answered"] and code == Exit.CANCELLED, screen
    job_id = screen.split("cancel job ")[1].split("?")[0]
    async with aiohttp.ClientSession() as session:
        for _ in range(100):
            async with session.get(
                f"{sandbox_broker}/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {KEY}"}
            ) as reply:
                job = await reply.json()
            if job["status"] == "cancelled":
                break
            await asyncio.sleep(0.1)
    assert job["status"] == "cancelled"
