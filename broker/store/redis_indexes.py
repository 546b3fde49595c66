"""The Redis store's small indexes beside the jobs: charges to reconcile and team webhooks to send.

    {P:jobs}:reconcile           zset  ids of jobs with charges to confirm, by when to ask next
    {P:jobs}:webhooks            zset  team-webhook deliveries ("<job id>|<event>") by when they are due
    {P:jobs}:webhook-tries       hash  delivery -> tries so far
"""

from __future__ import annotations

from pathlib import Path

from broker.store.redis_base import RedisConnection, float_arg, outage_as_unavailable

CLAIM_WEBHOOKS = (Path(__file__).parent / "lua" / "claim_webhooks.lua").read_text()


class RedisIndexes(RedisConnection):
    # Reconciliation -----------------------------------------------------------------------------
    async def schedule_reconcile(self, job_id: str, at: float) -> None:
        with outage_as_unavailable():
            await self._redis.zadd(self._keys.jobs_index("reconcile"), {job_id: at})

    async def due_reconciles(self, now: float, *, limit: int = 50) -> list[str]:
        with outage_as_unavailable():
            found = await self._redis.zrangebyscore(
                self._keys.jobs_index("reconcile"), "-inf", now, start=0, num=limit
            )
        return [str(job_id) for job_id in found]

    async def drop_reconcile(self, job_id: str) -> None:
        with outage_as_unavailable():
            await self._redis.zrem(self._keys.jobs_index("reconcile"), job_id)

    # Team webhooks ------------------------------------------------------------------------------
    async def schedule_webhook(self, delivery: str, at: float, tries: int = 0) -> None:
        with outage_as_unavailable():
            await self._redis.zadd(self._keys.jobs_index("webhooks"), {delivery: at})
            await self._redis.hset(self._keys.jobs_index("webhook-tries"), delivery, str(tries))

    async def claim_webhooks(self, now: float, hold_s: float, *, limit: int = 50) -> list[tuple[str, int]]:
        keys = [self._keys.jobs_index("webhooks"), self._keys.jobs_index("webhook-tries")]
        found = await self.run_script(CLAIM_WEBHOOKS, keys, [float_arg(now), float_arg(now + hold_s), limit])
        return [(str(found[i]), int(found[i + 1])) for i in range(0, len(found), 2)]

    async def drop_webhook(self, delivery: str) -> None:
        with outage_as_unavailable():
            await self._redis.zrem(self._keys.jobs_index("webhooks"), delivery)
            await self._redis.hdel(self._keys.jobs_index("webhook-tries"), delivery)
