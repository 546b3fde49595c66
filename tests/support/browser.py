"""A real headless Chromium driven over the DevTools protocol, for the dashboard's browser tests.

    async with Browser.start(tmp_path) as browser:
        page = await browser.open("http://127.0.0.1:8080/dashboard#key=...")
        await page.wait_for("document.body.dataset.loaded")
        rows = await page.evaluate("[...document.querySelectorAll('tr')].length")
        assert page.console_errors == []

Only aiohttp's websocket client is needed; Chromium is Debian's `chromium` package.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
START_TIMEOUT_S = 30.0


class Page:
    """One tab: evaluate script, wait for a condition, screenshot; errors it logged are collected."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.console_errors: list[str] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self._ws:
            data = json.loads(message.data)
            if "id" in data and data["id"] in self._pending:
                self._pending.pop(data["id"]).set_result(data)
            else:
                self._event(data.get("method", ""), data.get("params", {}))

    def _event(self, method: str, params: dict[str, Any]) -> None:
        if method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
            self.console_errors.append(
                " ".join(str(a.get("value", a.get("description"))) for a in params["args"])
            )
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            self.console_errors.append(str(details.get("exception", {}).get("description", details["text"])))
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            self.console_errors.append(f"{params['entry']['source']}: {params['entry']['text']}")

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        """One DevTools command; its result (an error answer raises)."""
        call_id = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[call_id] = future
        await self._ws.send_json({"id": call_id, "method": method, "params": params})
        answer = await asyncio.wait_for(future, 30)
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error']}")
        result: dict[str, Any] = answer["result"]
        return result

    async def evaluate(self, expression: str) -> Any:
        """The expression's value (awaited if it is a promise), as JSON."""
        result = await self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout_s: float = 20) -> Any:
        """Poll until `expression` is truthy; its value."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"{expression} still falsy after {timeout_s} s")
            await asyncio.sleep(0.1)

    async def navigate(self, url: str) -> None:
        await self.send("Page.navigate", url=url)

    async def screenshot(self, path: Path) -> None:
        """A PNG of the whole page."""
        height = await self.evaluate("document.documentElement.scrollHeight")
        await self.send(
            "Emulation.setDeviceMetricsOverride",
            width=1400,
            height=int(height),
            deviceScaleFactor=1,
            mobile=False,
        )
        shot = await self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.write_bytes(base64.b64decode(shot["data"]))

    async def close(self) -> None:
        self._reader.cancel()
        await self._ws.close()


class Browser:
    """A headless Chromium with its own profile under `workdir`; stopped on exit."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, session: aiohttp.ClientSession) -> None:
        self.proc, self.port, self.session = proc, port, session
        self.pages: list[Page] = []

    @classmethod
    @contextlib.asynccontextmanager
    async def start(cls, workdir: Path) -> AsyncIterator[Browser]:
        assert CHROMIUM is not None, "chromium is not installed"
        profile = workdir / "chromium-profile"
        # A browser started before in this folder left its port here: never read the old one.
        (profile / "DevToolsActivePort").unlink(missing_ok=True)
        args = [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--remote-debugging-port=0",
            "--remote-debugging-address=127.0.0.1",
            f"--user-data-dir={profile}",
            "about:blank",
        ]
        with (workdir / "chromium.log").open("wb") as log:
            proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            port = await _debugging_port(profile / "DevToolsActivePort", proc)
            async with aiohttp.ClientSession() as session:
                browser = cls(proc, port, session)
                try:
                    yield browser
                finally:
                    for page in browser.pages:
                        await page.close()
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)

    async def open(self, url: str) -> Page:
        """A new tab with console capture on, at `url`."""
        async with self.session.put(f"http://127.0.0.1:{self.port}/json/new?about:blank") as reply:
            target = await reply.json()
        ws = await self.session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0)
        page = Page(ws)
        self.pages.append(page)
        for domain in ("Runtime", "Log", "Page"):
            await page.send(f"{domain}.enable")
        await page.navigate(url)
        return page


async def _debugging_port(active_port: Path, proc: subprocess.Popen[bytes]) -> int:
    """Chromium writes the port it chose into the profile once it listens."""
    deadline = asyncio.get_running_loop().time() + START_TIMEOUT_S
    while asyncio.get_running_loop().time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"chromium exited with {proc.returncode}")
        if active_port.exists() and (text := active_port.read_text().split()):
            return int(text[0])
        await asyncio.sleep(0.1)
    raise TimeoutError("chromium did not open its debugging port")
