"""A loopback TCP proxy in front of Redis that can drop replies, to test answers lost on the way; free
ports and fresh key prefixes for Redis tests."""

from __future__ import annotations

import asyncio
import socket
import uuid
from urllib.parse import urlparse


def fresh_prefix() -> str:
    """A key prefix of its own for one test (the store's keys under it are dropped afterwards)."""
    return f"test-{uuid.uuid4().hex[:12]}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def host_port(url: str) -> tuple[str, int]:
    parsed = urlparse(url)
    return parsed.hostname or "127.0.0.1", parsed.port or 6379


class TcpProxy:
    """A loopback TCP proxy in front of Redis that can go away, come back, or swallow one reply."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = free_port()
        self.drop_next_reply = False
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()
        self._server = None

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        upstream_r, upstream_w = await asyncio.open_connection(*self.upstream)
        self._writers |= {client_w, upstream_w}
        try:
            await asyncio.gather(
                self._pump(client_r, upstream_w, replies=False),
                self._pump(upstream_r, client_w, replies=True),
            )
        finally:
            for writer in (client_w, upstream_w):
                writer.close()
                self._writers.discard(writer)

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, replies: bool
    ) -> None:
        try:
            while chunk := await reader.read(65536):
                if replies and self.drop_next_reply:
                    # Redis has run the command; the client never hears back and must retry.
                    self.drop_next_reply = False
                    writer.close()
                    return
                writer.write(chunk)
                await writer.drain()
        except (ConnectionError, OSError):
            return
        finally:
            writer.close()
