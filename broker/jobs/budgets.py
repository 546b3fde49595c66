"""Team budgets: a job's estimate is reserved against its team's daily and monthly windows at submit,
and settled to its actual cost when it ends (a failed or cancelled job releases what it didn't spend)."""

from __future__ import annotations

from datetime import datetime

from broker.errors import BudgetExceeded
from broker.store import BudgetWindow, Store
from policies.model import Policy
from pricing.money import Money


def budget_windows(team: str, policy: Policy, at: datetime) -> list[BudgetWindow]:
    """The budget windows (UTC day and month) a job submitted at `at` must fit."""
    windows = []
    if policy.daily_budget_usd is not None:
        windows.append(BudgetWindow(f"{team}:day:{at:%Y-%m-%d}", Money.parse(policy.daily_budget_usd).micros))
    if policy.monthly_budget_usd is not None:
        windows.append(
            BudgetWindow(f"{team}:month:{at:%Y-%m}", Money.parse(policy.monthly_budget_usd).micros)
        )
    return windows


async def reserve(store: Store, job_id: str, estimate: Money, windows: list[BudgetWindow]) -> None:
    """Reserve the estimate in every window, or raise 402 `budget_exceeded` with what remains."""
    if not windows:
        return
    result = await store.reserve_budget(job_id, estimate.micros, windows)
    if not result.ok:
        remaining = {key: str(Money(max(0, micros))) for key, micros in result.remaining_micros.items()}
        raise BudgetExceeded(
            f"the job's estimate of {estimate} USD does not fit the team's budget",
            details={"estimated_cost_usd": str(estimate), "remaining_usd": remaining},
        )


async def budget_status(store: Store, team: str, policy: Policy, at: datetime) -> list[dict[str, str]]:
    """Each of the team's budget windows at `at`: its limit, what is spent, reserved and remaining."""
    windows = budget_windows(team, policy, at)
    usage = await store.budget_usage([window.key for window in windows]) if windows else {}
    status = []
    for window in windows:
        spent, reserved = usage.get(window.key, (0, 0))
        status.append(
            {
                "window": window.key,
                "limit_usd": str(Money(window.limit_micros)),
                "spent_usd": str(Money(spent)),
                "reserved_usd": str(Money(reserved)),
                "remaining_usd": str(Money(max(0, window.limit_micros - spent - reserved))),
            }
        )
    return status
