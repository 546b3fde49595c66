"""Event-loop lag: how late the loop runs a callback that asked to run now. A handler that holds the
loop (parsing, hashing, file I/O done inline) shows here before any request times out.

`LoopLagMonitor` sleeps `interval_s` in a loop and records how much later than asked it woke, into
the `broker_event_loop_lag_seconds` histogram and the `broker_event_loop_lag_max_seconds` gauge (the
worst since the last scrape; `take_max` resets it). Clock and sleep are injectable for tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

from prometheus_client import Histogram

# Lag under a millisecond is normal; past 100 ms every request on the replica waits that long.
LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class LoopLagMonitor:
    """Measures the loop's lag every `interval_s` while started."""

    def __init__(
        self,
        histogram: Histogram,
        *,
        interval_s: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._histogram = histogram
        self._interval_s = interval_s
        self._clock = clock
        self._sleep = sleep
        self._task: asyncio.Task[None] | None = None
        self._max = 0.0
        self.samples = 0

    def take_max(self) -> float:
        """The worst lag since the last call (for a scrape), then start over."""
        worst, self._max = self._max, 0.0
        return worst

    def record(self, lag_s: float) -> None:
        lag_s = max(0.0, lag_s)
        self._histogram.observe(lag_s)
        self._max = max(self._max, lag_s)
        self.samples += 1

    async def _run(self) -> None:
        while True:
            asked = self._clock()
            await self._sleep(self._interval_s)
            self.record(self._clock() - asked - self._interval_s)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="loop-lag")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
