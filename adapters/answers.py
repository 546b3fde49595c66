"""Reading a provider's answer into unified values, the same way for every adapter.

Each adapter keeps its own vocabulary (its state table, its field names); what it does with a value
once found is shared here: an unknown state is an answer we cannot read, a cost is a number (never a
bool) in the provider's unit, and a task that failed or was cancelled and now reports a zero cost was
refunded. `task_status` builds the unified status with those rules, so that no adapter hands on an
output URL of a task that did not succeed.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from adapters.base import TaskState, TaskStatus
from adapters.errors import ProviderError, ProviderUnavailable
from pricing.units import CostUnit, ReportedCost

ENDED_UNSUCCESSFULLY = (TaskState.FAILED, TaskState.CANCELLED)
# The lower-case job statuses the seed providers (muvi, doitong) share.
SEED_STATES: Mapping[str, TaskState] = {
    "pending": TaskState.QUEUED,
    "processing": TaskState.RUNNING,
    "completed": TaskState.SUCCEEDED,
    "failed": TaskState.FAILED,
    "cancelled": TaskState.CANCELLED,
}


def text(value: Any) -> str | None:
    """`value` if it is a string (a provider's code, message or URL), else None."""
    return value if isinstance(value, str) else None


def number(value: Any) -> float | int | None:
    """`value` if it is a number; JSON's true and false are not."""
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def state_of(
    states: Mapping[str, TaskState], answer: Mapping[str, Any], provider: str, noun: str
) -> TaskState:
    """The unified state of `answer["status"]` in the provider's `states`; one we do not know means
    the answer cannot be read (`ProviderUnavailable`, so the next poll asks again). `noun` is what
    the provider calls a task ("prediction")."""
    state = states.get(str(answer.get("status")))
    if state is None:
        message = f"{provider} {noun} has unknown status {answer.get('status')!r}"
        raise ProviderUnavailable(message, provider=provider)
    return state


def cost_of(value: Any, unit: CostUnit) -> ReportedCost | None:
    """A reported amount in `unit`; None where the provider gave no number."""
    amount = number(value)
    return None if amount is None else ReportedCost(Decimal(str(amount)), unit)


def refunded_if_free(state: TaskState, cost: ReportedCost | None) -> bool:
    """The usual refund rule: a task that failed or was cancelled and now reports a zero cost was
    refunded. (A provider with its own rule passes `refunded` to `task_status`.)"""
    return state in ENDED_UNSUCCESSFULLY and cost is not None and cost.amount == 0


def task_status(
    state: TaskState,
    *,
    output_url: Any = None,
    cost: ReportedCost | None = None,
    error: ProviderError | None = None,
    progress: float | None = None,
    estimated_seconds: float | None = None,
    refunded: bool | None = None,
) -> TaskStatus:
    """A unified status: the output URL only of a success (and only a string), `refunded` by
    `refunded_if_free` unless the provider's own rule is given."""
    return TaskStatus(
        state=state,
        progress=progress,
        output_url=text(output_url) if state is TaskState.SUCCEEDED else None,
        reported_cost=cost,
        refunded=refunded_if_free(state, cost) if refunded is None else refunded,
        error=error,
        estimated_seconds=estimated_seconds,
    )
