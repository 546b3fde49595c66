"""One lifecycle for every state in the broker: a job's, an attempt's, a provider task's and a local
render's states keep their own words (on the wire and in stored records) and share one set of phases,
with `terminal` defined once."""

from __future__ import annotations

import pytest

from adapters.base import TaskState
from broker.schema import AttemptStatus, JobStatus, Lifecycle, Phase
from local_backend.scheduler import RenderState

STATES: list[type[Lifecycle]] = [JobStatus, AttemptStatus, TaskState, RenderState]
ENDS = {"succeeded", "failed", "cancelled"}


@pytest.mark.parametrize("states", STATES, ids=lambda s: s.__name__)
def test_each_state_enum_places_every_member_in_a_phase_and_ends_in_the_same_three(
    states: type[Lifecycle],
) -> None:
    assert {member.phase for member in states} == set(Phase)  # each passes through every phase
    assert {member.value for member in states if member.terminal} == ENDS
    assert all(member.terminal is member.phase.terminal for member in states)


def test_the_words_on_the_wire_are_kept() -> None:
    assert [s.value for s in JobStatus] == ["queued", "running", "succeeded", "failed", "cancelled"]
    assert [s.value for s in AttemptStatus] == [
        "submitting", "submitted", "running", "downloading", "succeeded", "failed", "cancelled"
    ]
    assert [s.value for s in TaskState] == [s.value for s in RenderState] == [s.value for s in JobStatus]


def test_an_attempts_own_words_sit_in_the_phase_they_mean() -> None:
    # Being sent and accepted but not started is waiting; fetching the output still runs.
    assert AttemptStatus.SUBMITTING.phase is Phase.QUEUED and not AttemptStatus.SUBMITTING.terminal
    assert AttemptStatus.SUBMITTED.phase is Phase.QUEUED
    assert AttemptStatus.DOWNLOADING.phase is Phase.RUNNING and not AttemptStatus.DOWNLOADING.terminal


def test_a_state_word_no_phase_knows_is_refused_not_taken_for_running() -> None:
    class Odd(Lifecycle):
        PARKED = "parked"

    with pytest.raises(ValueError, match="parked"):
        _ = Odd.PARKED.terminal
