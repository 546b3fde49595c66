"""Fault plans: what an emulator should do wrong next, set from tests or over HTTP.

A fault targets an endpoint kind (or any) and fires for the next `count` matching requests
(`count=None`: every one until cleared). HTTP faults act on one request; task faults act on the
next tasks created by submits:

    rate_limit     answer 429 with `Retry-After: retry_after_s`, in the provider's error body
    server_error   answer `status` (default 503), in the provider's error body
    http_error     answer any `status` with provider error `code` (402 out of credits, 401, ...)
    slow           wait `delay_s`, then answer normally
    drop           close the connection before handling: the request had no effect
    lose_answer    handle the request (a submit creates its task), then close the connection unanswered
    malformed      handle the request, then answer its status with a body that is not valid JSON
    task_fail      the next created tasks fail at the end of their render with provider `code`
    never_finish   the next created tasks stay running forever
    forge_webhook  the next created tasks sign their webhook with a wrong secret (muvi, doitong)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any


class FaultKind(StrEnum):
    RATE_LIMIT = "rate_limit"
    SERVER_ERROR = "server_error"
    HTTP_ERROR = "http_error"
    SLOW = "slow"
    DROP = "drop"
    LOSE_ANSWER = "lose_answer"
    MALFORMED = "malformed"
    TASK_FAIL = "task_fail"
    NEVER_FINISH = "never_finish"
    FORGE_WEBHOOK = "forge_webhook"

    @property
    def is_task_fault(self) -> bool:
        return self in (FaultKind.TASK_FAIL, FaultKind.NEVER_FINISH, FaultKind.FORGE_WEBHOOK)


class Endpoint(StrEnum):
    """The kind of provider endpoint a request hit; faults and request counts are keyed on it."""

    SUBMIT = "submit"
    STATUS = "status"
    CANCEL = "cancel"
    RESULT = "result"
    DOWNLOAD = "download"
    ANY = "any"


@dataclass(slots=True)
class Fault:
    """One planned misbehaviour. `count=None` repeats it until the plan is cleared."""

    kind: FaultKind
    endpoint: Endpoint = Endpoint.ANY
    count: int | None = 1
    status: int | None = None
    retry_after_s: float = 1.0
    delay_s: float = 0.0
    code: str | None = None
    message: str | None = None

    def matches(self, endpoint: Endpoint) -> bool:
        return self.endpoint in (Endpoint.ANY, endpoint)

    def to_json(self) -> dict[str, Any]:
        """The JSON form the admin endpoint accepts and lists."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> Fault:
        """Parse the admin endpoint's JSON; raises ValueError on a bad fault."""
        if not isinstance(data, dict) or "kind" not in data:
            raise ValueError("a fault is an object with at least 'kind'")
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown fault fields: {sorted(unknown)}")
        fault = cls(**data)
        fault.kind = FaultKind(fault.kind)
        fault.endpoint = Endpoint(fault.endpoint)
        if fault.count is not None and fault.count < 1:
            raise ValueError("count must be at least 1, or null for always")
        return fault


class FaultPlan:
    """The faults still to fire, in the order they were added."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []

    def add(self, fault: Fault) -> Fault:
        """Plan a fault; returns it."""
        self._faults.append(fault)
        return fault

    def inject(self, kind: FaultKind | str, endpoint: Endpoint | str = Endpoint.ANY, **fields: Any) -> Fault:
        """Shorthand for tests: `plan.inject("rate_limit", "submit", retry_after_s=3)`."""
        return self.add(Fault(kind=FaultKind(kind), endpoint=Endpoint(endpoint), **fields))

    def clear(self) -> None:
        self._faults.clear()

    @property
    def pending(self) -> list[Fault]:
        return list(self._faults)

    def take_http(self, endpoint: Endpoint) -> Fault | None:
        """Consume the first HTTP fault that targets `endpoint`."""
        return self._take(endpoint, task=False)

    def take_task(self) -> Fault | None:
        """Consume the first task fault, for a task being created now."""
        return self._take(Endpoint.SUBMIT, task=True)

    def _take(self, endpoint: Endpoint, *, task: bool) -> Fault | None:
        for fault in self._faults:
            if fault.kind.is_task_fault is task and fault.matches(endpoint):
                if fault.count is not None:
                    fault.count -= 1
                    if fault.count == 0:
                        self._faults.remove(fault)
                return fault
        return None
