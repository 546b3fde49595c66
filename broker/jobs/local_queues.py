"""One provider's queue in this process (the home of `broker.jobs.queues` for SQLite deployments).

Each team's places are a sorted list (priority, then age), so a grant and a quote's view cost a
binary search, not a walk over every waiting job. The places are also on the jobs' records
(`JobRecord.queued`, ordered by the job's age), so a restarted process puts them back
(`broker.jobs.scheduler`) before it takes any job.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from dataclasses import dataclass, field

from broker.jobs.queues import QueueView, Seat, TeamState, mean_hold, next_team, placed

Place = tuple[float, str]  # (score, job id): the order within a team


@dataclass
class Ledger:
    """The slot-seconds each team has had of one provider (the fair share's service): the slots ended,
    as held, and one mean hold for each slot held now."""

    served: dict[str, float] = field(default_factory=dict)  # team -> slot-seconds of its slots ended
    holding: dict[str, int] = field(default_factory=dict)  # team -> slots held or granted
    mean_hold_s: float = 0.0

    def begin(self, team: str) -> None:
        self.holding[team] = self.holding.get(team, 0) + 1

    def end(self, team: str, start: float, now: float, *, render: bool = True) -> None:
        """A slot (or, `render=False`, a grant never taken) ended: its time is served."""
        held = self.holding.get(team, 0) - 1
        if held <= 0:
            self.holding.pop(team, None)
        else:
            self.holding[team] = held
        self.served[team] = self.served.get(team, 0.0) + (now - start)
        if render:
            self.mean_hold_s = mean_hold(self.mean_hold_s, now - start)

    def service(self, team: str) -> float:
        return self.served.get(team, 0.0) + self.holding.get(team, 0) * self.mean_hold_s

    def place(self, team: str, weight: float, others: Mapping[str, float], slots: int) -> None:
        """Hold a team that starts waiting within a round of `others` (team -> weight)."""
        own = self.service(team)
        around = [(self.service(other), w) for other, w in others.items()]
        level = placed(own, weight, around, slots * self.mean_hold_s)
        self.served[team] = self.served.get(team, 0.0) + (level - own)


@dataclass
class LocalQueue:
    seats: dict[str, Seat] = field(default_factory=dict)  # job id -> its place
    teams: dict[str, list[Place]] = field(default_factory=dict)  # team -> its places, in order
    grants: dict[str, tuple[float, str, float]] = field(default_factory=dict)  # job -> (lapses, team, start)
    ledger: Ledger = field(default_factory=Ledger)
    weights: dict[str, float] = field(default_factory=dict)  # team -> the weight of its latest seat
    turns: dict[str, int] = field(default_factory=dict)  # team -> the turn it last got a slot in
    turn: int = 0

    def join(self, seat: Seat, cap: int | None) -> None:
        """Take a place, or keep the one the job has (its age, not its last look, orders it). A team
        that starts waiting is placed among the others (`Ledger.place`)."""
        if seat.job_id in self.seats:
            return
        if seat.team not in self.teams:
            waiting = {t: self.seats[p[0][1]].weight for t, p in self.teams.items()}
            holding = {t: self.weights.get(t, 1.0) for t in self.ledger.holding if t != seat.team}
            slots = cap if cap is not None else sum(self.ledger.holding.values())
            self.ledger.place(seat.team, seat.weight, waiting or holding, slots)
        self.seats[seat.job_id] = seat
        self.weights[seat.team] = seat.weight
        bisect.insort(self.teams.setdefault(seat.team, []), (seat.score, seat.job_id))

    def leave(self, job_id: str, now: float) -> None:
        grant = self.grants.pop(job_id, None)
        if grant is not None:
            self.ledger.end(grant[1], grant[2], now, render=False)
        seat = self.seats.pop(job_id, None)
        if seat is None:
            return
        places = self.teams[seat.team]
        index = bisect.bisect_left(places, (seat.score, job_id))
        if index < len(places) and places[index] == (seat.score, job_id):
            del places[index]
        if not places:
            del self.teams[seat.team]

    def take_grant(self, job_id: str, now: float) -> float | None:
        """The job takes the slot granted to it (and leaves the queue): returns when the grant began (the
        slot's start), or None if it holds no grant."""
        grant = self.grants.pop(job_id, None)
        if grant is None:
            return None
        self.leave(job_id, now)
        return grant[2]

    def prune(self, now: float) -> None:
        """Lapsed grants go back to the queue (their jobs keep their places)."""
        for job_id in [j for j, (until, _, _) in self.grants.items() if until <= now]:
            _, team, start = self.grants.pop(job_id)
            self.ledger.end(team, start, now, render=False)

    def grant(self, free: int, now: float, hold_s: float) -> list[str]:
        """Grant up to `free` slots by the fair-share rule; returns the jobs to wake."""
        woken: list[str] = []
        ledger = self.ledger
        while free > 0:
            heads = self._heads()
            if not heads:
                break
            chosen = next_team(
                TeamState(
                    t,
                    ledger.holding.get(t, 0),
                    s.weight,
                    s.guaranteed,
                    ledger.service(t),
                    self.turns.get(t, 0),
                    s.score,
                )
                for t, s in heads.items()
            )
            assert chosen is not None
            seat = heads[chosen]
            self.grants[seat.job_id] = (now + hold_s, chosen, now)
            ledger.begin(chosen)
            self.mark(chosen)
            woken.append(seat.job_id)
            free -= 1
        return woken

    def mark(self, team: str) -> None:
        """The team got a slot (granted, or taken free): the round robin of ties moves past it."""
        self.turn += 1
        self.turns[team] = self.turn

    def _heads(self) -> dict[str, Seat]:
        """Each team's first waiting job not yet granted a slot (past at most a cap's grants)."""
        heads: dict[str, Seat] = {}
        for team, places in self.teams.items():
            for _, job_id in places:
                if job_id not in self.grants:
                    heads[team] = self.seats[job_id]
                    break
        return heads

    @property
    def waiting(self) -> int:
        return len(self.seats) - len(self.grants)

    def view(self, seat: Seat, cap: int, held: int) -> QueueView:
        places = self.teams.get(seat.team, [])
        ahead = bisect.bisect_left(places, (seat.score, seat.job_id))
        granted_ahead = sum(1 for _, team, _ in self.grants.values() if team == seat.team)
        others = sum(self.seats[p[0][1]].weight for team, p in self.teams.items() if team != seat.team and p)
        return QueueView(
            cap=cap,
            busy=held + len(self.grants),
            waiting=self.waiting,
            team_ahead=max(0, ahead - granted_ahead),
            team_weight=seat.weight,
            waiting_weight=others,
        )

    def depths(self) -> dict[str, int]:
        return {team: len(places) for team, places in self.teams.items()}
