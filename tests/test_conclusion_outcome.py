"""What the view learns from an outcome without asking the database again."""

from __future__ import annotations

import pytest

from experiments.models import AttemptState, ConclusionAttempt
from experiments.services.conclusions import STATE_BLOCKED, ConclusionOutcome
from experiments.services.conclusions import experiment_force_conclude as conclude


def _outcome(state: str, *, attempt=None, blocked_by=None) -> ConclusionOutcome:
    return ConclusionOutcome(attempt=attempt, state=state, ok=False, message="m", blocked_by=blocked_by)


@pytest.mark.parametrize("state", [AttemptState.REQUESTED, AttemptState.SUCCEEDED, AttemptState.UNKNOWN])
def test_an_attempt_that_keeps_its_claim_is_the_holder(state):
    mine = ConclusionAttempt(pk=1)
    assert _outcome(state, attempt=mine).claim_holder is mine


def test_a_definite_failure_leaves_no_holder():
    assert _outcome(AttemptState.FAILED, attempt=ConclusionAttempt(pk=1)).claim_holder is None


def test_a_blocked_press_names_the_other_attempt():
    theirs = ConclusionAttempt(pk=2)
    assert _outcome(STATE_BLOCKED, attempt=ConclusionAttempt(pk=3), blocked_by=theirs).claim_holder is theirs


@pytest.mark.django_db
def test_access_handed_over_for_another_workspace_is_not_trusted(pm, workspace, other_workspace, outsider):
    from experiments.selectors.workspaces import workspace_access

    # The outsider is admin of other_workspace; handing that access over for `workspace`
    # must not let them conclude there.
    foreign = workspace_access(user=outsider, workspace_pk=other_workspace.pk)

    class NoCalls:
        def __getattr__(self, name):
            raise AssertionError(f"Mixpanel must not be called ({name})")

    import datetime as dt

    outcome = conclude(
        workspace=workspace,
        user=outsider,
        experiment_id="e1",
        experiment_name="E",
        reason_category="other",
        reason_text="x",
        end_date=dt.datetime.now(dt.UTC),
        client=NoCalls(),
        access=foreign,
    )
    assert outcome.attempt is None
    assert not outcome.ok
    assert ConclusionAttempt.objects.count() == 0
