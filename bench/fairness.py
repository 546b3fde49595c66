"""Fair shares of a capped provider (issue #20): who gets Runway's slots when teams queue for them.

Each scenario starts the project's Runway emulator (renders of a time drawn from `--render-s`) and one
`broker serve` with default settings on SQLite or Redis, Runway capped at `--cap` (10) slots, teams
a, b and c; it prints its figures and PASS or FAIL against the issue's target.

    late-teams    a submits 2,000 jobs, b and c 5 each `--late-s` later: every b and c job reaches the
                  provider within one render (the range's top) plus 15 s of its submit
    equal-shares  three teams saturating (more jobs queued than the cap) for `--window` renders:
                  slot-seconds at the provider per team within 5 % of each other (largest / smallest)
    weights       two teams saturating, policy weights 3 and 1: slot-seconds 75/25 +- 5 points
    utilisation   the equal-shares run: tasks rendering at the provider >= 95 % of the cap while any
                  job waits (sampled every second; the saturating scenarios all print it)
    idle-waiters  10,000 jobs waiting behind renders of `--idle-render-s`: broker CPU over 60 s
                  <= 0.1 core (beside the same broker's CPU before they came, slots just as full)

    python -m bench.fairness [--scenario all|late-teams|...] [--store sqlite|redis] [--render-s 60-90]

Slot-seconds and starts are the emulator's own task timelines (a task holds a provider slot from its
submit to its end); a task's team comes from the broker's jobs (their attempts' provider task ids).
`--render-s 6-9` runs the same scenarios ten times faster (Runway's 5 s minimum poll interval then
weighs ten times more).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

from bench.fairness_rig import Rig, Task, cpu_cores, running

LATE_JOBS = 5
START_MARGIN_S = 15.0
SHARE_TOLERANCE = 0.05
UTILISATION_TARGET = 0.95
IDLE_CPU_TARGET = 0.1


def verdict(ok: bool, target: str) -> str:
    return f"  {'PASS' if ok else 'FAIL'}: {target}"


async def late_teams(options: argparse.Namespace) -> bool:
    high = options.render[1]
    print(f"late-teams: a submits {options.flood}, b and c {LATE_JOBS} each {options.late_s:g} s later")
    async with running(options, options.render) as rig:
        flood = asyncio.create_task(rig.submit("a", options.flood))
        await asyncio.sleep(options.late_s)
        a_before = len(rig.accepted)
        b, c = await asyncio.gather(rig.submit("b", LATE_JOBS, 5), rig.submit("c", LATE_JOBS, 5))
        late = b + c
        starts: dict[str, float] = {}
        deadline = time.time() + 3 * high + 120
        while len(starts) < len(late) and time.time() < deadline:
            await asyncio.sleep(1.0)
            tasks = await rig.tasks()
            for job in late:
                if job.id in starts:
                    continue
                for attempt in (await rig.job(job.team, job.id))["attempts"]:
                    task = tasks.get(attempt.get("provider_job_id") or "")
                    if task is not None:
                        starts[job.id] = task.begins_at
        a_after = len(rig.accepted) - len(late)
        flood.cancel()
        in_flight = (await rig.stats())["active"]
        target = high + START_MARGIN_S
        tasks, owners, now = await rig.tasks(), await rig.task_teams(("a", "b", "c")), time.time()
        rig.dump(tasks, owners, {"late": late[0].created_at, "now": now})
    delays = {job.id: starts[job.id] - job.created_at for job in late if job.id in starts}
    print(f"  a's jobs accepted when b and c submitted: {a_before}; by the last start: {a_after}")
    print(f"  tasks rendering at the provider at the end: {in_flight} (cap {options.cap})")
    moment = late[0].created_at + target
    per_team = ", ".join(f"{team} {rendering(tasks, owners, team, moment)}" for team in ("a", "b", "c"))
    print(f"  tasks rendering per team {target:g} s after b and c submitted: {per_team}")
    for job in late:
        delay = delays.get(job.id)
        shown = f"{delay:6.1f} s" if delay is not None else "never started"
        print(f"  team {job.team} job {job.id}: submit -> provider submit {shown}")
    if delays:
        worst, mean = max(delays.values()), statistics.fmean(delays.values())
        print(f"  start delay: max {worst:.1f} s, mean {mean:.1f} s")
    ok = len(delays) == len(late) and max(delays.values()) <= target
    print(verdict(ok, f"every b and c job starts within {high:g} + {START_MARGIN_S:g} = {target:g} s"))
    return ok


async def shares(options: argparse.Namespace, weights: dict[str, float]) -> bool:
    """Teams in `weights` saturate the provider; slot-seconds per team over the window, and utilisation."""
    low, high = options.render
    mean_render = (low + high) / 2
    teams = tuple(weights)
    per_team = options.cap * (options.window + 3)
    name = "equal-shares" if len(set(weights.values())) == 1 else "weights"
    shown = ", ".join(f"{t}: weight {w:g}" for t, w in weights.items())
    print(f"{name}: {len(teams)} teams saturating ({per_team} jobs each; {shown})")
    async with running(options, options.render, weights) as rig:
        began = time.time()
        await asyncio.gather(*(rig.submit(team, per_team, 8) for team in teams))
        # One whole render after the first submits every first-come slot has been given back.
        start = max(began + high, time.time())
        end = start + options.window * mean_render
        await asyncio.sleep(end - time.time())
        now = time.time()
        tasks = await rig.tasks()
        owners = await rig.task_teams(teams)
        jobs_of = {team: sum(1 for a in rig.accepted if a.team == team) for team in teams}
        rig.dump(tasks, owners, {"start": start, "end": end, "now": now})
    first = min(task.begins_at for task in tasks.values())
    spans = f"{end - first:.0f} s from the first task at the provider; {end - start:.0f} s after one render"
    print(f"  measured over {spans}")
    whole = {team: slot_seconds(tasks, owners, team, first, end, now) for team in teams}
    steady = {team: slot_seconds(tasks, owners, team, start, end, now) for team in teams}
    for team in teams:
        made = sum(1 for owner in owners.values() if owner == team)
        print(
            f"  team {team}: {whole[team]:7.0f} slot-seconds = {whole[team] / sum(whole.values()):6.1%};"
            f" after one render {steady[team]:7.0f} = {steady[team] / sum(steady.values()):6.1%}"
            f" ({made} of its {jobs_of[team]} jobs reached the provider)"
        )
    saturated = all(sum(1 for o in owners.values() if o == t) < jobs_of[t] for t in teams)
    # Judged over the whole run: every team has jobs waiting from its first seconds (they submit at
    # once), and the rule counts slot-seconds, so the slots the first comer took while the others' jobs
    # were arriving are paid back afterwards: after one render the first comer is below its share.
    judge(weights, steady, "after one render: ")
    ok, target = judge(weights, whole, "from the first task: ")
    print(verdict(ok and saturated, target + ("" if saturated else " (a team ran out of jobs: void)")))
    used = utilisation(rig, start, end, sum(steady.values()))
    return ok and saturated and used


def judge(weights: dict[str, float], seconds: dict[str, float], label: str) -> tuple[bool, str]:
    """Print how far the slot-seconds are from the weights' split; (within target, the target)."""
    total = sum(seconds.values())
    if len(set(weights.values())) == 1:
        low = min(seconds.values())
        spread = max(seconds.values()) / low - 1 if low else float("inf")
        print(f"  {label}largest / smallest - 1: {spread:.1%}")
        return spread <= SHARE_TOLERANCE, f"slot-seconds within {SHARE_TOLERANCE:.0%} of each other"
    weight_sum = sum(weights.values())
    off = max(abs(seconds[t] / total - weights[t] / weight_sum) for t in weights)
    expected = "/".join(f"{weights[t] / weight_sum:.0%}" for t in weights)
    print(f"  {label}furthest from {expected}: {off * 100:.1f} points")
    return off <= SHARE_TOLERANCE, f"shares {expected} +- {SHARE_TOLERANCE * 100:.0f} points"


def rendering(tasks: dict[str, Task], owners: dict[str, str], team: str, moment: float) -> int:
    """The team's tasks rendering at the provider at `moment`."""
    mine = (task for task_id, task in tasks.items() if owners.get(task_id) == team)
    return sum(1 for task in mine if task.begins_at <= moment < (task.finished_at or float("inf")))


def slot_seconds(
    tasks: dict[str, Task], owners: dict[str, str], team: str, start: float, end: float, now: float
) -> float:
    mine = (task for task_id, task in tasks.items() if owners.get(task_id) == team)
    return sum(task.overlap(start, end, now) for task in mine)


def utilisation(rig: Rig, start: float, end: float, slot_total: float) -> bool:
    """Tasks rendering per second while any job waits, against the cap; True when >= 95 %."""
    waited = [s for s in rig.samples if start <= s.at <= end and s.waiting > 0]
    if not waited:
        print(verdict(False, "no second in the window had a job waiting"))
        return False
    mean = statistics.fmean(s.active for s in waited) / rig.cap
    full = sum(1 for s in waited if s.active >= rig.cap) / len(waited)
    exact = slot_total / (rig.cap * (end - start))
    print(
        f"  slots in use while jobs wait ({len(waited)} s sampled): mean {mean:.1%} of {rig.cap},"
        f" min {min(s.active for s in waited)}, all {rig.cap} busy {full:.0%} of the seconds;"
        f" from task timelines {exact:.1%}"
    )
    ok = mean >= UTILISATION_TARGET
    print(verdict(ok, f"slots in use >= {UTILISATION_TARGET:.0%} of the cap while anyone waits"))
    return ok


async def idle_waiters(options: argparse.Namespace) -> bool:
    render = options.idle_render_s
    print(f"idle-waiters: {options.waiters} jobs waiting behind {options.cap} renders of {render:g} s")
    async with running(options, (render, render)) as rig:
        await rig.submit("a", options.cap)
        while (await rig.stats())["active"] < options.cap:
            await asyncio.sleep(0.5)
        await asyncio.sleep(5.0)
        before = await cpu_cores(rig.broker_pid, options.idle_window_s)
        began = time.time()
        await rig.submit("a", options.waiters)
        submit_s = time.time() - began
        settled = 0.0
        while time.time() - began < submit_s + 300:  # let the broker park what it accepted
            settled = await cpu_cores(rig.broker_pid, 5.0)
            if settled < IDLE_CPU_TARGET:
                break
        parked_s = time.time() - began
        during = await cpu_cores(rig.broker_pid, options.idle_window_s)
        numbers = await rig.stats()
    waiting = len(rig.accepted) - numbers["tasks"]
    window = options.idle_window_s
    accepted = len(rig.accepted)
    print(f"  accepted {accepted} ({rig.refused} refused); {options.waiters} submitted in {submit_s:.0f} s")
    print(
        f"  settled {parked_s:.0f} s after the first (5 s CPU {settled:.2f} cores); tasks: {numbers['tasks']}"
    )
    print(f"  broker CPU over {window:g} s, {options.cap} in flight, nobody waiting: {before:.3f} cores")
    print(
        f"  broker CPU over {window:g} s, {options.cap} in flight, {waiting} jobs waiting: {during:.3f} cores"
    )
    ok = during <= IDLE_CPU_TARGET and waiting >= options.waiters
    print(verdict(ok, f"{options.waiters} jobs waiting cost <= {IDLE_CPU_TARGET:g} core"))
    return ok


def render_range(text: str) -> tuple[float, float]:
    low, _, high = text.partition("-")
    return float(low), float(high or low)


SCENARIOS = ("late-teams", "equal-shares", "weights", "utilisation", "idle-waiters")


async def run(options: argparse.Namespace) -> bool:
    chosen = SCENARIOS if options.scenario == "all" else (options.scenario,)
    low, high = options.render
    print(f"store: {options.store}; renders {low:g}-{high:g} s; Runway capped at {options.cap}")
    results: dict[str, bool] = {}
    for scenario in chosen:
        if scenario == "late-teams":
            results[scenario] = await late_teams(options)
        elif scenario in ("equal-shares", "utilisation") and "equal-shares" not in results:
            results["equal-shares"] = await shares(options, {"a": 1.0, "b": 1.0, "c": 1.0})
        elif scenario == "weights":
            results[scenario] = await shares(options, {"a": 3.0, "b": 1.0})
        elif scenario == "idle-waiters":
            results[scenario] = await idle_waiters(options)
        print(flush=True)
    print("summary: " + ", ".join(f"{name} {'PASS' if ok else 'FAIL'}" for name, ok in results.items()))
    return all(results.values())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fairness", description=__doc__)
    parser.add_argument("--scenario", choices=("all", *SCENARIOS), default="all")
    parser.add_argument("--store", choices=["sqlite", "redis"], default="sqlite")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--render-s", dest="render", type=render_range, default=(60.0, 90.0))
    parser.add_argument("--cap", type=int, default=10, help="Runway's max_concurrency")
    parser.add_argument("--flood", type=int, default=2000, help="late-teams: team a's jobs")
    parser.add_argument("--late-s", type=float, default=10.0, help="late-teams: b and c submit this later")
    parser.add_argument("--window", type=int, default=4, help="renders (of the mean time) measured")
    parser.add_argument("--waiters", type=int, default=10_000, help="idle-waiters: jobs waiting")
    parser.add_argument("--idle-render-s", type=float, default=600.0, help="idle-waiters: render time")
    parser.add_argument("--idle-window-s", type=float, default=60.0, help="idle-waiters: CPU measured")
    parser.add_argument("--seed", type=int, default=7, help="the emulator's render-time draws")
    ok = asyncio.run(run(parser.parse_args(argv)))
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
