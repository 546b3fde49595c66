"""Waiting on the injected sleep while an event may cut the wait short."""

from __future__ import annotations

import asyncio

from adapters.base import Sleep


async def sleep_or_event(sleep: Sleep, seconds: float, event: asyncio.Event) -> bool:
    """Wait `seconds` on `sleep`, or until `event` is set; True when the event ended the wait."""
    sleeper = asyncio.ensure_future(sleep(max(0.0, seconds)))
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({sleeper, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for pending in (sleeper, waiter):
            pending.cancel()
        await asyncio.gather(sleeper, waiter, return_exceptions=True)
    return event.is_set()
