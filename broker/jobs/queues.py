"""Provider queues: who gets a capped provider's next free slot, and how long a job would wait for one.

A job that finds its provider at capacity takes a place in that provider's queue (kept where the
slots are: `broker.jobs.local_queues` in this process, `broker.jobs.redis_capacity` in Redis for every
replica) and is parked with no timer of its own. When a slot frees, the queue *grants* it to the next
job, which is woken at once; the grant holds the slot for that job (for `GRANT_S`) so a job arriving
meanwhile cannot take it. A grant not taken in time lapses and goes to the next job, the first one
keeping its place.

The next job is chosen across teams by weighted fair share of the provider's slot-seconds, then FIFO
within the team with `interactive` before `batch`:

1. a team below its `guaranteed_slots` goes first (the fewest in use for its guarantee first);
2. else the team whose *service*, divided by its `weight`, is least. A team's service is the
   slot-seconds its jobs have held the provider's slots (each slot counted from its grant, or its take,
   to its end) plus one typical hold (the provider's recent mean) for each slot it holds now: each slot
   is charged as promised when it starts and as held when it ends. Equal weights give equal
   slot-seconds over time, 3:1 gives 75/25; slots freed at once are spread across the teams;
3. ties go to the team whose last slot is the oldest (a round robin), then the oldest head job.

A team that starts waiting (its queue was empty) is placed among the teams waiting already (those
holding slots, if none waits): its service, divided by its weight, is held within one round of the
most served of theirs, above or below. A round is the provider's slot-seconds in one mean hold (the cap
times the mean hold). So a team arriving behind another's thousand jobs is served first until it has
had about a round more than before, and all its jobs start within about one render time, even when
they fill the cap; but a team idle for a day cannot take the provider for a day, and the slots a team
borrowed while nobody waited are never held against it for more than a round.

Idle capacity is always lent: a guarantee gives precedence when a slot frees, never an empty slot.
The same rule runs in Python (`broker.jobs.local_queues`, for the in-process queues) and in Lua
(`lua/slots_lib.lua`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from broker.schema import Priority
from broker.store import JobRecord

GRANT_S = 30.0  # how long a freed slot waits for the job it was granted to
HOLD_SMOOTHING = 0.1  # the weight of each ended slot in the provider's mean hold
EPSILON = 1e-9
# A queue place's score: priority first, then the job's age; interactive sorts before batch.
PRIORITY_RANK = {Priority.INTERACTIVE: 0, Priority.BATCH: 1}
PRIORITY_SPAN = 1e11  # more than any unix time in seconds, so the rank dominates the score


@dataclass(frozen=True, slots=True)
class Seat:
    """A job asking for a slot: whose it is, how urgent, how old, and its team's share."""

    job_id: str
    team: str
    priority: Priority = Priority.INTERACTIVE
    since: float = 0.0  # when the job was accepted (unix s): FIFO within its team
    weight: float = 1.0
    guaranteed: int = 0

    @property
    def score(self) -> float:
        return PRIORITY_RANK[self.priority] * PRIORITY_SPAN + self.since


@dataclass(frozen=True, slots=True)
class TeamState:
    """A team with jobs waiting for one provider, as the grant rule sees it."""

    team: str
    in_use: int  # slots its jobs hold, granted ones included
    weight: float
    guaranteed: int
    service: float  # slot-seconds had, and promised for the slots held (see the module docstring)
    last_turn: float  # when it last got a slot, as a turn number (0: never): older goes first on a tie
    head: float  # the score of its first waiting job


def next_team(teams: Iterable[TeamState]) -> str | None:
    """The team the next free slot goes to (see the module docstring), or None if none waits."""
    best: tuple[int, float, float, float] | None = None
    chosen: str | None = None
    for state in teams:
        under = state.in_use < state.guaranteed
        share = state.in_use / state.guaranteed if under else state.service / state.weight
        key = (0 if under else 1, share, state.last_turn, state.head)
        if best is None or _before(key, best):
            best, chosen = key, state.team
    return chosen


def placed(own: float, weight: float, others: Iterable[tuple[float, float]], round_s: float) -> float:
    """The service a team that starts waiting is counted at: its own, held within one round (`round_s`:
    the provider's slot-seconds in one mean hold) of the most served of the `others` (their (service,
    weight)), all divided by weight."""
    levels = [service / other_weight for service, other_weight in others]
    if not levels:
        return own
    lead, credit = max(levels), round_s / weight
    return min(max(own / weight, lead - credit), lead + credit) * weight


def mean_hold(mean_s: float, held_s: float) -> float:
    """The provider's mean hold after a slot held `held_s` ended (0: none ended yet)."""
    return held_s if mean_s <= 0 else mean_s + HOLD_SMOOTHING * (held_s - mean_s)


def _before(key: tuple[int, float, float, float], other: tuple[int, float, float, float]) -> bool:
    for mine, theirs in zip(key, other, strict=True):
        if abs(mine - theirs) > EPSILON:
            return mine < theirs
    return False


@dataclass(frozen=True, slots=True)
class QueueView:
    """What a quote needs of one capped provider's queue, for one seat."""

    cap: int  # max_concurrency (0: none, only a rate limit)
    busy: int  # slots held or granted
    waiting: int  # jobs in the queue, all teams
    team_ahead: int  # the seat's team's jobs that go before it
    team_weight: float  # the seat's weight
    waiting_weight: float  # the weights of the other teams with jobs waiting
    refill_s: float | None = None  # while the rate limit blocks: seconds until its window admits a submit

    def ahead(self) -> int:
        """Jobs granted a slot before this seat: its team's jobs ahead, stretched by the share the
        other waiting teams take meanwhile, never more than the whole queue. A team's first waiting job
        is taken as next: a team new to the queue is placed up to a round ahead of the others."""
        share = self.team_weight / (self.team_weight + self.waiting_weight)
        return min(self.waiting, int(self.team_ahead / share))


def predicted_wait_s(view: QueueView, render_s: float) -> float:
    """Seconds until the seat's submit: slots free at `cap / render_s` a second while all are busy (no
    cap: none to wait for), and never before the rate window refills."""
    refill = view.refill_s or 0.0
    if view.cap <= 0:
        return refill
    needed = view.ahead() + 1 - max(0, view.cap - view.busy)
    if needed <= 0:
        return refill
    return max(refill, needed * render_s / view.cap)


def seat_of(
    job_id: str, team: str, since: float, priority: Priority | None, policy: Mapping[str, object]
) -> Seat:
    """A job's seat: its own priority, else its policy's, else interactive; the policy's share."""
    chosen = priority or _policy_priority(policy) or Priority.INTERACTIVE
    weight = policy.get("weight")
    guaranteed = policy.get("guaranteed_slots")
    return Seat(
        job_id=job_id,
        team=team,
        priority=chosen,
        since=since,
        weight=float(weight) if isinstance(weight, int | float) else 1.0,
        guaranteed=int(guaranteed) if isinstance(guaranteed, int) else 0,
    )


def _policy_priority(policy: Mapping[str, object]) -> Priority | None:
    value = policy.get("priority")
    return Priority(value) if isinstance(value, str) else None


def record_seat(record: JobRecord) -> Seat:
    """The seat of a stored job: its age orders it, its accepted policy gives its share."""
    job = record.job
    return seat_of(job.id, job.team, job.created_at.timestamp(), job.request.priority, record.policy or {})
