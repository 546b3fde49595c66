"""The Redis store's budgets: reservations against spend windows, settled once a job's cost is known.

Keys (all under the `{P:budget}` tag, see the layout in `redis.py`): a hash per window, a reservation
hash per job, and the set of open reservations. Both scripts are given every key they touch: a
reservation's windows by its caller, a settlement's by reading the reservation first.
"""

from __future__ import annotations

import time

from broker.store.base import BudgetWindow, Reservation, StoreUnavailable
from broker.store.redis_base import float_arg, outage_as_unavailable, write_token
from broker.store.redis_indexes import RedisIndexes

SETTLED_KEEP_S = 7 * 24 * 3600  # a settled reservation is kept this long for corrections
# A settlement retries while reservations for the same job keep adding windows under it.
_SETTLE_TRIES = 8


class RedisBudgets(RedisIndexes):
    async def reserve_budget(
        self, job_id: str, amount_micros: int, windows: list[BudgetWindow]
    ) -> Reservation:
        if amount_micros < 0:
            raise ValueError("a reservation cannot be negative")
        keys = self._keys
        reply = await self._run(
            "reserve",
            [keys.reservation(job_id), *(keys.window(w.key) for w in windows), keys.open_reservations],
            [
                amount_micros,
                write_token(),
                *(w.limit_micros for w in windows),
                *(w.key for w in windows),
                job_id,
                float_arg(time.time()),
            ],
        )
        remaining = {w.key: int(left) for w, left in zip(windows, reply[1:], strict=True)}
        return Reservation(ok=reply[0] == 1, remaining_micros=remaining)

    async def settle_budget(self, job_id: str, actual_micros: int) -> None:
        if actual_micros < 0:
            raise ValueError("a spend cannot be negative")
        keys = self._keys
        for _ in range(_SETTLE_TRIES):
            # The windows to declare are those the reservation names; the script refuses (and writes
            # nothing) if a reservation made since added one.
            with outage_as_unavailable():
                fields = await self._redis.hkeys(keys.reservation(job_id))
            windows = sorted(str(field)[2:] for field in fields if str(field).startswith("w:"))
            settled = await self._run(
                "settle",
                [keys.reservation(job_id), keys.open_reservations, *(keys.window(w) for w in windows)],
                [actual_micros, job_id, SETTLED_KEEP_S, *windows],
            )
            if settled == 1:
                return
        raise StoreUnavailable(
            f"the reservation of job {job_id} kept changing while it was settled; retry shortly"
        )

    async def open_reservations(self, reserved_before: float, *, limit: int = 100) -> list[str]:
        with outage_as_unavailable():
            found = await self._redis.zrangebyscore(
                self._keys.open_reservations, "-inf", f"({reserved_before!r}", start=0, num=limit
            )
        return [str(job_id) for job_id in found]

    async def budget_usage(self, keys: list[str]) -> dict[str, tuple[int, int]]:
        if not keys:
            return {}
        with outage_as_unavailable():
            async with self._redis.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.hmget(self._keys.window(key), ["spent", "reserved"])
                rows = await pipe.execute()
        return {
            key: (int(spent or 0), int(reserved or 0))
            for key, (spent, reserved) in zip(keys, rows, strict=True)
        }
