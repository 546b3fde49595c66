"""A provider's facts, declared once by its adapter (`Adapter.spec`) and read by the broker's steps,
which name no provider: how long its outputs can be fetched, whether a lost submit may be resent, when
a refused one is retried, when to poll, which image forms it takes, whether it sends webhooks (and
whether they are signed), what a cancel stops and refunds, and the unit it bills in.

Adding a provider is its adapter (with its spec), its emulator, its routes in config.yaml and its
tests; nothing under `broker/` changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from adapters.base import ImageAcceptance, PollSchedule, TaskState
from adapters.http import RetryPolicy
from pricing.units import CostUnit

HOUR_S = 3600.0
DAY_S = 24 * HOUR_S


class Webhooks(StrEnum):
    NONE = "none"  # the provider sends none: its tasks are polled
    UNSIGNED = "unsigned"  # a cue to poll at once; its body proves nothing (fal)
    SIGNED = "signed"  # verified with the provider's secret before anything in it is believed


@dataclass(frozen=True, slots=True)
class CancelTerms:
    """What a cancel request does, by the task's state when it arrives."""

    stops: frozenset[TaskState]  # states a cancel ends the task in (empty: the provider cannot cancel)
    refunds: frozenset[TaskState]  # states a cancel in which the provider charges nothing for


NO_CANCEL = CancelTerms(stops=frozenset(), refunds=frozenset())
# Most providers publish no output retention: a day, the common CDN default, is assumed.
UNPUBLISHED_RETENTION_S = DAY_S
# A submit refused for now (429, 5xx) is sent again up to 3 tries within a minute, unless a spec says.
USUAL_SUBMIT_RETRY = RetryPolicy()
QUEUED = frozenset({TaskState.QUEUED})
ACTIVE = frozenset({TaskState.QUEUED, TaskState.RUNNING})  # queued or running: not yet ended


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    name: str
    poll_schedule: PollSchedule
    image_acceptance: ImageAcceptance
    billing_unit: CostUnit  # the unit of the cost its tasks report
    # How long a finished output can still be fetched; a day where the provider publishes nothing.
    output_retention_s: float = UNPUBLISHED_RETENTION_S
    submit_retry: RetryPolicy = USUAL_SUBMIT_RETRY  # when a submit refused for now is sent again
    # True only where a lost submit may be sent again safely (the provider takes an idempotency key).
    idempotent_submit: bool = False
    webhooks: Webhooks = Webhooks.NONE
    cancel: CancelTerms = NO_CANCEL
