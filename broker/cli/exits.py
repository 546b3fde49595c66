"""Exit codes of the remote commands, one per failure class, so a script can branch on them."""

from __future__ import annotations

from enum import IntEnum
from typing import Protocol


class _ErrorAnswer(Protocol):
    status: int
    code: str


class Exit(IntEnum):
    """`broker submit/quote/jobs/status/cancel/download/pricing/...` exit with one of these."""

    OK = 0
    JOB_FAILED = 1  # the job ran and failed
    USAGE = 2  # bad flags, or a request the broker refused as invalid (400, 409, 413, 415, 422)
    AUTH = 3  # no key, a wrong key, or a key without the right (401, 403)
    NOT_FOUND = 4  # no such job for this key (404)
    NO_ROUTE = 5  # no route can serve the job (422 no_feasible_route)
    BUDGET = 6  # over the team's budget (402)
    UNAVAILABLE = 7  # the broker cannot be reached, or answered 5xx / 503
    CANCELLED = 8  # the job ended cancelled
    TIMEOUT = 9  # --wait gave up before the job ended (the job goes on)
    INTERRUPTED = 130  # Ctrl-C (the job was left running unless you chose to cancel it)


class CommandError(Exception):
    """A failure a command found itself (a bad file, a missing flag): its line and exit code."""

    def __init__(self, message: str, code: Exit = Exit.USAGE) -> None:
        super().__init__(message)
        self.code = code


def exit_for_api_error(error: _ErrorAnswer) -> Exit:
    """The exit code for an error answer (a `broker.client.BrokerAPIError`)."""
    if error.status in (401, 403):
        return Exit.AUTH
    if error.status == 404:
        return Exit.NOT_FOUND
    if error.status == 402:
        return Exit.BUDGET
    if error.status == 422 and error.code == "no_feasible_route":
        return Exit.NO_ROUTE
    if error.status >= 500:
        return Exit.UNAVAILABLE
    return Exit.USAGE
