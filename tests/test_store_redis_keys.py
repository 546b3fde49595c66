"""Every key a store script reads or writes is one its caller passed in KEYS, as Redis Cluster requires.

A cluster only refuses a key held by another node (`test_store_redis_cluster.py`); an undeclared key in
the script's own slot works there by accident. So here each script runs behind a Lua preamble that
checks every command's key against KEYS and fails the call otherwise, and the whole store contract,
claims, replaces, listings, budgets and the webhook outbox run through it. A static check keeps key
names from being built out of ARGV in the first place.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from redis.exceptions import ResponseError

from broker.schema import JobStatus
from broker.store import BudgetWindow, StoreUnavailable, redis_base, redis_indexes
from broker.store.redis import RedisStore
from tests.support import store_contract as contract
from tests.support.deployment import REDIS_URL
from tests.support.factories import job_record
from tests.support.stores import open_redis_store

LUA = Path(redis_base.__file__).parent / "lua"

# The commands the store's scripts use; each takes exactly one key, its first argument. A script using
# another command fails the check below until it is listed here (with how it names its keys).
SINGLE_KEY = [
    "GET",
    "SET",
    "EXISTS",
    "DEL",
    "EXPIRE",
    "HGET",
    "HSET",
    "HMGET",
    "HDEL",
    "HGETALL",
    "HKEYS",
    "HINCRBY",
    "ZADD",
    "ZREM",
    "ZSCORE",
    "ZCARD",
    "ZRANGE",
    "ZRANGEBYSCORE",
    "ZREVRANGEBYLEX",
    "SADD",
    "SREM",
    "LLEN",
    "LINDEX",
    "RPUSH",
]

KEY_CHECK = (
    """
local __declared, __real = {}, redis
for _, k in ipairs(KEYS) do __declared[k] = true end
local __single = {}
for _, c in ipairs({"""
    + ", ".join(f"'{c}'" for c in SINGLE_KEY)
    + """}) do __single[c] = true end
local function __checked(fn)
  return function(cmd, ...)
    local c, k = string.upper(cmd), select(1, ...)
    if not __single[c] then error('key check: ' .. c .. ' is not a command the check knows') end
    if not __declared[k] then error('key check: ' .. c .. ' on undeclared key ' .. tostring(k)) end
    return fn(cmd, ...)
  end
end
local redis = setmetatable(
  {call = __checked(__real.call), pcall = __checked(__real.pcall)}, {__index = __real})
"""
)


@pytest.fixture
async def checked_store(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[RedisStore]:
    """A Redis store whose scripts all run behind the key check."""
    monkeypatch.setattr(redis_base, "SCRIPTS", {n: KEY_CHECK + t for n, t in redis_base.SCRIPTS.items()})
    monkeypatch.setattr(redis_indexes, "CLAIM_WEBHOOKS", KEY_CHECK + redis_indexes.CLAIM_WEBHOOKS)
    async with open_redis_store() as store:
        yield store


async def test_the_key_check_refuses_an_undeclared_key(checked_store: RedisStore) -> None:
    # The check is what the tests below rely on: a key built from KEYS[1] is not KEYS[1].
    declared = checked_store.keys.jobs_index("ids")
    found = await checked_store.run_script(KEY_CHECK + "return redis.call('ZCARD', KEYS[1])", [declared], [])
    assert found == 0
    with pytest.raises(ResponseError, match="undeclared key"):
        await checked_store.run_script(
            KEY_CHECK + "return redis.call('ZCARD', KEYS[1] .. ARGV[1])", [declared], ["x"]
        )


@pytest.mark.parametrize("case", sorted(name for name in dir(contract) if name.startswith("test_")))
async def test_store_contract_declares_every_key(checked_store: RedisStore, case: str) -> None:
    await getattr(contract, case)(checked_store)


async def test_claims_under_contention_declare_their_candidates(checked_store: RedisStore) -> None:
    store = checked_store
    for _ in range(20):
        await store.create_job(job_record())
    batches = await asyncio.gather(*(store.claim_due(f"w{i}", 1_000.0, 30, limit=3) for i in range(10)))
    ids = [record.id for batch in batches for record in batch]
    # Every due job is taken once, though all claimers read the same candidates first.
    assert len(ids) == 20 and len(set(ids)) == 20
    assert await store.claim_due("late", 1_000.0, 30, limit=5) == []
    # Once the leases lapse, each is due again.
    assert len(await store.claim_due("again", 1_031.0, 30, limit=50)) == 20


class _Contended(RedisStore):
    """A store whose first claim script runs just after a rival claim took a job and another became
    due (what a second replica does between a claim's read and its script), and whose next claim
    script meets an outage when `outage` is set."""

    rival: RedisStore
    outage = False
    claims = 0

    async def _run(self, script: str, keys: Sequence[str], args: Sequence[str | int]) -> Any:
        if script == "claim":
            self.claims += 1
            if self.claims == 1:
                assert len(await self.rival.claim_due("rival", 1_000.0, 30, limit=1)) == 1
                await self.rival.create_job(job_record())
            elif self.outage:
                raise StoreUnavailable("the job store (Redis) is unreachable (test); retry shortly")
        return await super()._run(script, keys, args)


@pytest.mark.parametrize("outage", [False, True])
async def test_a_claim_reads_again_when_another_took_its_candidates(
    checked_store: RedisStore, outage: bool
) -> None:
    made = [(await checked_store.create_job(job_record()))[0].id for _ in range(3)]
    store = _Contended.from_url(REDIS_URL, prefix=checked_store.prefix)
    store.rival, store.outage = checked_store, outage
    await store.open()
    try:
        claimed = [record.id for record in await store.claim_due("me", 1_000.0, 30, limit=3)]
    finally:
        await store.close()
    # The rival took the oldest; the first round leased the other two and saw one taken, so it read
    # again: the job made due meanwhile is leased too, unless the store failed, when the first two
    # are still returned (leased, they are this claimer's to run).
    assert claimed[:2] == made[1:]
    assert len(claimed) == (2 if outage else 3) and made[0] not in claimed


async def test_a_replace_of_a_quarantined_job_declares_its_stored_indexes(checked_store: RedisStore) -> None:
    store = checked_store
    record, _ = await store.create_job(job_record())
    # Quarantine marks the stored status "unreadable" without a new version: not a status the replace
    # declares at first, so the script names it and the store calls again with its indexes.
    await store.quarantine_job(record.id)
    done = await store.replace_job(record.evolve(status=JobStatus.FAILED))
    assert done is not None and done.version == record.version + 1
    assert await store.count_jobs(JobStatus.FAILED) == 1
    assert await store.replace_job(record.evolve(status=JobStatus.FAILED)) is None


async def test_settling_refuses_windows_it_was_not_given(checked_store: RedisStore) -> None:
    store, keys = checked_store, checked_store.keys
    assert (await store.reserve_budget("job-1", 40, [BudgetWindow("t:day", 100)])).ok
    assert (await store.reserve_budget("job-1", 10, [BudgetWindow("t:month", 100)])).ok
    # A settlement that read the reservation before its second window was added writes nothing...
    stale = await store._run(
        "settle",
        [keys.reservation("job-1"), keys.open_reservations, keys.window("t:day")],
        [45, "job-1", 60, "t:day"],
    )
    assert stale == 0
    assert await store.budget_usage(["t:day", "t:month"]) == {"t:day": (0, 40), "t:month": (0, 10)}
    # ...and the store's own settlement reads it again and books both.
    await store.settle_budget("job-1", 45)
    assert await store.budget_usage(["t:day", "t:month"]) == {"t:day": (45, 0), "t:month": (45, 0)}


async def test_listings_and_the_webhook_outbox_run_under_the_check(checked_store: RedisStore) -> None:
    store = checked_store
    made = [(await store.create_job(job_record(team="studio")))[0] for _ in range(3)]
    page, cursor = await store.list_jobs(team="studio", limit=2)
    assert [r.id for r in page] == [r.id for r in reversed(made)][:2] and cursor is not None
    rest, end = await store.list_jobs(team="studio", limit=2, cursor=cursor)
    assert [r.id for r in rest] == [made[0].id] and end is None
    await store.schedule_webhook("job-1|succeeded", 10.0, tries=2)
    assert await store.claim_webhooks(11.0, 30.0) == [("job-1|succeeded", 2)]
    assert await store.claim_webhooks(12.0, 30.0) == []


# Static: no key name built in Lua ------------------------------------------------------------------
_CALL = re.compile(r"redis\.p?call\(\s*'(\w+)'\s*,\s*([^,)]+)")
_KEY_FROM_KEYS = re.compile(r"^KEYS\[[^\]]+\]$")


def _lua_files() -> list[Path]:
    return sorted(LUA.glob("*.lua"))


@pytest.mark.parametrize("path", _lua_files(), ids=lambda p: p.name)
def test_no_script_builds_a_key_name(path: Path) -> None:
    text = path.read_text()
    for command, key in _CALL.findall(text):
        key = key.strip()
        assert command.upper() in SINGLE_KEY, f"{path.name}: {command} is not a command the checks know"
        if _KEY_FROM_KEYS.match(key):
            continue
        # Otherwise a plain name, bound only ever to a KEYS entry (a parameter of job_lib, a local).
        assert re.fullmatch(r"[a-z_]+", key), f"{path.name}: {command} on a computed key `{key}`"
        for bound in re.findall(rf"\b(?:local\s+)?{key}\s*=\s*([^\n]+)", text):
            computed = "ARGV" in bound or ".." in bound or re.search(r"\w\(", bound)
            assert not computed, f"{path.name}: key `{key}` = {bound}"
    assert "local function key(" not in text, f"{path.name}: a helper that builds key names"


async def test_a_listing_by_status_leaves_out_a_job_that_left_it_between_its_reads(
    checked_store: RedisStore,
) -> None:
    store = checked_store
    running, _ = await store.create_job(job_record(status=JobStatus.RUNNING))
    moved, _ = await store.create_job(job_record(status=JobStatus.RUNNING))
    # What the index read sees when the job succeeds between it and the records' read.
    assert await store.replace_job(moved.evolve(status=JobStatus.SUCCEEDED)) is not None
    async with store.client() as client:
        await client.zadd(store.keys.jobs_index("status", "running"), {moved.id: 0})
    page, cursor = await store.list_jobs(status=JobStatus.RUNNING)
    assert [record.id for record in page] == [running.id] and cursor is None


async def test_expiry_declares_every_key(checked_store: RedisStore, tmp_path: Path) -> None:
    from tests import test_retention

    await test_retention.test_an_expired_job_is_gone_with_its_indexes_and_artifacts(checked_store, tmp_path)


async def test_the_ledger_declares_every_key(checked_store: RedisStore, tmp_path: Path) -> None:
    from tests import test_retention

    await test_retention.test_totals_are_the_same_before_and_after_expiry(checked_store, tmp_path)
