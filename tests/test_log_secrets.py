"""No secret reaches a log, aiohttp's own included: a real `broker serve` (debug level) gets malformed
requests over raw sockets with real keys inside (a team key, the admin key, a provider key, the webhook
secret), in the places aiohttp's parser echoes raw bytes from; then its whole log is searched.

Every line of the log is one JSON object (no bare traceback), the parser's complaints are in it (so
the search is not vacuous), and no key appears anywhere, whole or as the bytes it was sent as.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.support.procs import ROOT, clean_env, free_port

TEAM_KEY = "growth-live-key-7f3a9c1e5b"
ADMIN_KEY = "admin-live-key-2d8e4f6a0c"
PROVIDER_KEY = "fal-live-key-9b1d3f5e7a"
WEBHOOK_SECRET = "webhook-live-secret-4c6e8a0b2d"
SECRETS = (TEAM_KEY, ADMIN_KEY, PROVIDER_KEY, WEBHOOK_SECRET)
CONFIG = ROOT / "config.yaml"


def malformed(key: str) -> list[bytes]:
    """Requests aiohttp's parser refuses (and logs), or the broker's edge refuses, each carrying `key`."""
    k = key.encode()
    head = b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\n"
    return [
        head + b"Authorization: Bearer " + k + b"\x00\r\n\r\n",
        head + b"Authorization: Bearer " + k + b"\x7f\r\n\r\n",
        head + b"Authorization: Bearer " + k + b"\xff\r\nContent-Length: 2\r\n\r\n{}",
        head + b"Authorization " + k + b"\r\n\r\n",
        head + b"X-Key\x01: " + k + b"\r\n\r\n",
        head + b"Authorization: Bearer " + k + b"\r\nTransfer-Encoding: chunked\r\n\r\n" + k + b"\r\n{}\r\n",
        b"GET /v1/jobs?key=" + k + b"\x00 HTTP/1.1\r\nHost: x\r\n\r\n",
        k + b" /v1/jobs HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /v1/jobs " + k + b"\r\nHost: x\r\n\r\n",
        head + b"Authorization: Bearer " + k + b"\r\nX-Pad: " + b"a" * 9000 + b"\r\n\r\n",
        head + b"Authorization: Bearer " + k + b"\r\nContent-Length: " + k + b"\r\n\r\n",
        head + b"Authorization: Bearer " + k + b"\r\nContent-Type: application/json\r\nContent-Length: 20"
        b'\r\n\r\n{"prompt": "' + k[:6],
    ]


async def send(port: int, raw: bytes) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        await writer.drain()
        writer.write_eof()
        await asyncio.wait_for(reader.read(), timeout=10)
    except (ConnectionResetError, BrokenPipeError):
        pass
    finally:
        writer.close()


def wait_until_up(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(log.read_text()[-3000:])


async def test_keys_in_malformed_requests_never_reach_the_log(tmp_path: Path) -> None:
    port = free_port()
    env = clean_env(
        {
            "BROKER_STORE_URL": f"sqlite:///{tmp_path}/broker.db",
            "BROKER_DATA_DIR": str(tmp_path / "data"),
            "BROKER_LOG_LEVEL": "debug",
            "BROKER_KEY_GROWTH": TEAM_KEY,
            "BROKER_KEY_STUDIO": "studio-live-key-1a2b3c4d5e",
            "BROKER_ADMIN_KEY": ADMIN_KEY,
            "BROKER_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "FAL_KEY": PROVIDER_KEY,
        }
    )
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "broker", "serve", "--config", str(CONFIG), "--port", str(port)],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until_up(port, proc, log)
        for secret in SECRETS:
            for raw in malformed(secret):
                await send(port, raw)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
    text = log.read_bytes()
    for secret in SECRETS:
        assert secret.encode() not in text, secret
        assert secret[:12].encode() not in text, secret  # nor a recognisable part of it
    lines = [line for line in text.decode("utf-8").splitlines() if line.strip()]
    events = [json.loads(line) for line in lines]  # every line JSON: no bare traceback
    parser_errors = [e for e in events if e.get("logger", "").startswith("aiohttp")]
    assert len(parser_errors) >= 3 * len(SECRETS), lines[:20]
    assert any("[redacted]" in json.dumps(e) for e in parser_errors)
