"""What the view learns from an outcome without asking the database again."""

from __future__ import annotations

import pytest

from experiments.models import AttemptState, ConclusionAttempt
from experiments.services.attempts import STATE_BLOCKED, AttemptOutcome


def _outcome(state: str, *, attempt=None, blocked_by=None) -> AttemptOutcome:
    return AttemptOutcome(attempt=attempt, state=state, ok=False, message="m", blocked_by=blocked_by)


@pytest.mark.parametrize("state", [AttemptState.REQUESTED, AttemptState.SUCCEEDED, AttemptState.UNKNOWN])
def test_an_attempt_that_keeps_its_claim_is_the_holder(state):
    mine = ConclusionAttempt(pk=1)
    assert _outcome(state, attempt=mine).claim_holder is mine


def test_a_definite_failure_leaves_no_holder():
    assert _outcome(AttemptState.FAILED, attempt=ConclusionAttempt(pk=1)).claim_holder is None


def test_a_blocked_press_names_the_other_attempt():
    theirs = ConclusionAttempt(pk=2)
    assert _outcome(STATE_BLOCKED, attempt=ConclusionAttempt(pk=3), blocked_by=theirs).claim_holder is theirs
