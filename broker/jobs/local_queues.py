"""One provider's queue in this process (the home of `broker.jobs.queues` for SQLite deployments).

Each team's places are a sorted list (priority, then age), so a grant and a quote's view cost a
binary search, not a walk over every waiting job. The places are also on the jobs' records
(`JobRecord.queued`, ordered by the job's age), so a restarted process puts them back
(`broker.jobs.scheduler`) before it takes any job.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from broker.jobs.queues import QueueView, Seat, TeamState, next_team

Place = tuple[float, str]  # (score, job id): the order within a team


@dataclass
class LocalQueue:
    seats: dict[str, Seat] = field(default_factory=dict)  # job id -> its place
    teams: dict[str, list[Place]] = field(default_factory=dict)  # team -> its places, in order
    grants: dict[str, tuple[float, str]] = field(default_factory=dict)  # job id -> (lapses at, team)
    turns: dict[str, int] = field(default_factory=dict)  # team -> the turn it last got a slot in
    turn: int = 0

    def join(self, seat: Seat) -> None:
        """Take a place, or keep the one the job has (its age, not its last look, orders it)."""
        if seat.job_id in self.seats:
            return
        self.seats[seat.job_id] = seat
        bisect.insort(self.teams.setdefault(seat.team, []), (seat.score, seat.job_id))

    def leave(self, job_id: str) -> None:
        self.grants.pop(job_id, None)
        seat = self.seats.pop(job_id, None)
        if seat is None:
            return
        places = self.teams[seat.team]
        index = bisect.bisect_left(places, (seat.score, job_id))
        if index < len(places) and places[index] == (seat.score, job_id):
            del places[index]
        if not places:
            del self.teams[seat.team]

    def take_grant(self, job_id: str) -> bool:
        """The job takes the slot granted to it (and leaves the queue); False if it holds no grant."""
        if job_id not in self.grants:
            return False
        self.leave(job_id)
        return True

    def prune(self, now: float) -> None:
        """Lapsed grants go back to the queue (their jobs keep their places)."""
        for job_id in [j for j, (until, _) in self.grants.items() if until <= now]:
            del self.grants[job_id]

    def grant(self, free: int, in_use: dict[str, int], now: float, hold_s: float) -> list[str]:
        """Grant up to `free` slots by the fair-share rule; returns the jobs to wake."""
        woken: list[str] = []
        counts = dict(in_use)
        for _, team in self.grants.values():
            counts[team] = counts.get(team, 0) + 1
        while free > 0:
            heads = self._heads()
            if not heads:
                break
            chosen = next_team(
                TeamState(t, counts.get(t, 0), s.weight, s.guaranteed, self.turns.get(t, 0), s.score)
                for t, s in heads.items()
            )
            assert chosen is not None
            seat = heads[chosen]
            self.grants[seat.job_id] = (now + hold_s, chosen)
            counts[chosen] = counts.get(chosen, 0) + 1
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
        granted_ahead = sum(1 for _, team in self.grants.values() if team == seat.team)
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
