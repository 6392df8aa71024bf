"""experiment_decide: one PATCH per decision, every outcome audited, reconciled by reading."""

from __future__ import annotations

import threading
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone

from experiments.mixpanel import client as mixpanel
from experiments.mixpanel.errors import MixpanelOutcomeUnknown, MixpanelRejected
from experiments.models import (
    AttemptAction,
    AttemptState,
    AuditEntry,
    ConclusionAttempt,
    ConclusionClaim,
    EntryKind,
    Membership,
    Role,
)
from experiments.services import conclusions as conclusion_services
from experiments.services import decisions
from experiments.services import reconcile as reconcile_services
from experiments.services.attempts import STATE_BLOCKED
from tests.factories import assert_chain_valid, past_the_in_flight_limit
from tests.fake_mixpanel import EXP_ID, FakeMixpanel, raw_experiment

NOTE = "Green lifted checkout by 3%; shipping it."


def concluded_fake(**kwargs) -> FakeMixpanel:
    return FakeMixpanel({1001: [raw_experiment(status="concluded", end_date="2026-11-20T10:00:00Z")]}, **kwargs)


def decide(workspace, user, client, **overrides):
    kwargs = {
        "workspace": workspace,
        "user": user,
        "experiment_id": EXP_ID,
        "experiment_name": "Checkout button colour",
        "variant": "green",
        "note": NOTE,
        "client": client,
    }
    kwargs.update(overrides)
    return decisions.experiment_decide(**kwargs)


def kinds(attempt):
    return list(AuditEntry.objects.filter(attempt=attempt).order_by("seq").values_list("kind", flat=True))


def decision_claim():
    claim = ConclusionClaim.objects.filter(experiment_id=EXP_ID, action=AttemptAction.DECISION).first()
    return claim.attempt_id if claim else None


@pytest.mark.django_db
def test_a_decision_sends_one_patch_with_the_body_and_is_audited(workspace, pm):
    fake = concluded_fake()
    outcome = decide(workspace, pm, fake)

    assert outcome.ok, outcome.message
    assert fake.patch_bodies == [{"success": True, "variant": "green", "message": NOTE}]
    assert fake.status_of() == "success"
    attempt = ConclusionAttempt.objects.get(pk=outcome.attempt.pk)
    assert attempt.action == AttemptAction.DECISION
    assert attempt.request_body == {"success": True, "variant": "green", "message": NOTE}
    assert attempt.reason_text == NOTE
    assert attempt.end_date is None
    assert kinds(attempt) == [EntryKind.DECISION_REQUESTED, EntryKind.DECISION_SUCCEEDED]
    assert decision_claim() == attempt.pk
    assert "ship variant green" in outcome.message
    # The answer is stored verbatim in the outcome entry.
    payload = AuditEntry.objects.filter(attempt=attempt).order_by("-seq").first().payload_data
    assert '"status": "success"' in payload["response"]["body"]
    assert_chain_valid()


@pytest.mark.django_db
def test_ship_none_sends_success_false(workspace, pm):
    fake = concluded_fake()
    outcome = decide(workspace, pm, fake, variant=None)
    assert outcome.ok
    assert fake.patch_bodies == [{"success": False, "variant": "", "message": NOTE}]
    assert fake.status_of() == "fail"


@pytest.mark.django_db
def test_the_conclusion_claim_does_not_block_the_decision(workspace, pm):
    fake = FakeMixpanel()
    concluded = conclusion_services.experiment_force_conclude(
        workspace=workspace,
        user=pm,
        experiment_id=EXP_ID,
        experiment_name="x",
        reason_category="significance",
        reason_text="",
        end_date=timezone.now(),
        client=fake,
    )
    assert concluded.ok
    outcome = decide(workspace, pm, fake)
    assert outcome.ok, outcome.message
    assert ConclusionClaim.objects.filter(experiment_id=EXP_ID).count() == 2
    assert_chain_valid()


@pytest.mark.django_db
def test_a_second_press_is_blocked_and_sends_nothing(workspace, pm):
    fake = concluded_fake()
    first = decide(workspace, pm, fake)
    second = decide(workspace, pm, fake)
    assert first.ok
    assert second.state == STATE_BLOCKED
    assert second.blocked_by.pk == first.attempt.pk
    assert "was already recorded by" in second.message
    assert len(fake.patches) == 1
    assert kinds(second.attempt) == [EntryKind.DECISION_REQUESTED, EntryKind.DECISION_FAILED]
    assert_chain_valid()


@pytest.mark.django_db
def test_a_viewer_is_refused_before_anything_is_recorded(workspace, django_user_model):
    viewer = django_user_model.objects.create_user(username="viewer", password="x")
    Membership.objects.create(user=viewer, workspace=workspace, role=Role.VIEWER)
    fake = concluded_fake()
    outcome = decide(workspace, viewer, fake)
    assert outcome.attempt is None
    assert outcome.message == decisions.MSG_FORBIDDEN
    assert fake.calls == []
    assert not ConclusionAttempt.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("note", ["", "   ", "x" * (decisions.NOTE_MAX_LENGTH + 1)])
def test_a_note_is_required_and_bounded(workspace, pm, note):
    fake = concluded_fake()
    outcome = decide(workspace, pm, fake, note=note)
    assert outcome.attempt is None
    assert outcome.message in (decisions.MSG_NO_NOTE, decisions.MSG_NOTE_TOO_LONG)
    assert fake.calls == []


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("status", "variant", "words"),
    [
        ("active", "green", "only a concluded experiment"),
        ("success", "green", "already decided"),
        ("concluded", "blue", "no variant"),
    ],
)
def test_what_the_read_shows_can_refuse_the_decision(workspace, pm, status, variant, words):
    fake = FakeMixpanel({1001: [raw_experiment(status=status)]})
    outcome = decide(workspace, pm, fake, variant=variant)
    assert outcome.state == AttemptState.FAILED
    assert words in outcome.message
    assert fake.patches == []
    assert decision_claim() is None  # released: a person may try again
    assert kinds(outcome.attempt) == [EntryKind.DECISION_REQUESTED, EntryKind.DECISION_FAILED]


@pytest.mark.django_db
def test_a_definite_failure_releases_the_claim(workspace, pm):
    fake = concluded_fake(patch=MixpanelRejected("Mixpanel refused the request (HTTP 400).", http_status=400))
    outcome = decide(workspace, pm, fake)
    assert outcome.state == AttemptState.FAILED
    assert "did not record the decision" in outcome.message
    assert decision_claim() is None
    assert len(fake.patches) == 1
    assert_chain_valid()


@pytest.mark.django_db
def test_an_unknown_outcome_keeps_the_claim_and_is_reconciled_by_reading(workspace, pm):
    unknown = MixpanelOutcomeUnknown("Outcome unknown: the connection was lost.")
    fake = concluded_fake(patch=("apply", unknown))
    outcome = decide(workspace, pm, fake)
    assert outcome.state == AttemptState.UNKNOWN
    assert "Do not retry" in outcome.message
    assert decision_claim() == outcome.attempt.pk
    assert len(fake.patches) == 1

    attempt = ConclusionAttempt.objects.select_related("workspace").get(pk=outcome.attempt.pk)
    early = reconcile_services.conclusion_reconcile(attempt=attempt, client=fake)
    assert early.outcome == "too_early"
    with past_the_in_flight_limit():
        result = reconcile_services.conclusion_reconcile(attempt=attempt, client=fake)
    assert result.outcome == "applied"
    assert "the decision was applied" in result.message
    assert len(fake.patches) == 1  # reading only
    assert kinds(attempt)[-1] == EntryKind.DECISION_RECONCILED
    assert decision_claim() == attempt.pk
    assert_chain_valid()


@pytest.mark.django_db
def test_an_unknown_outcome_that_did_not_land_is_released_by_reconcile(workspace, pm):
    fake = concluded_fake(patch=MixpanelOutcomeUnknown("Outcome unknown: timed out."))
    outcome = decide(workspace, pm, fake)
    attempt = ConclusionAttempt.objects.select_related("workspace").get(pk=outcome.attempt.pk)
    with past_the_in_flight_limit():
        result = reconcile_services.conclusion_reconcile(attempt=attempt, client=fake)
    assert result.outcome == "not_applied"
    assert attempt.state == AttemptState.RECONCILED_NOT_APPLIED
    assert decision_claim() is None
    assert_chain_valid()


@pytest.mark.django_db
def test_an_answer_that_is_not_decided_is_a_definite_failure(workspace, pm):
    fake = concluded_fake(patch="answer:concluded")
    outcome = decide(workspace, pm, fake)
    assert outcome.state == AttemptState.FAILED
    assert "did not record the decision" in outcome.message
    assert decision_claim() is None


@pytest.mark.django_db(transaction=True)
def test_simultaneous_presses_send_one_patch(standin, workspace, pm):
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL: SQLite admits one writer, so presses cannot race for the claim")
    experiment = standin.find(1001, status="concluded")
    standin.set_fault("latency", experiment_id=experiment["id"], latency_ms=500)
    presses = 8
    barrier = threading.Barrier(presses)
    outcomes: list = [None] * presses

    def press(index: int) -> None:
        try:
            client = mixpanel.client_for(workspace)
            barrier.wait(timeout=30)
            outcomes[index] = decisions.experiment_decide(
                workspace=workspace,
                user=pm,
                experiment_id=experiment["id"],
                experiment_name="Race",
                variant=None,
                note=f"press {index}",
                client=client,
            )
        finally:
            mixpanel.reset_clients()
            connection.close()

    threads = [threading.Thread(target=press, args=(i,)) for i in range(presses)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert len(standin.requests(method="PATCH", path_contains=experiment["id"])) == 1
    assert standin.experiment(1001, experiment["id"])["status"] == "fail"
    assert sum(1 for o in outcomes if o is not None and o.ok) == 1
    assert sum(1 for o in outcomes if o is not None and o.state == STATE_BLOCKED) == presses - 1
    assert AuditEntry.objects.filter(kind=EntryKind.DECISION_REQUESTED).count() == presses
    assert_chain_valid()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("column", "value", "named"),
    [
        ("action", "conclusion", "action is 'conclusion', its first entry is decision_requested"),
        ("reason_text", "Edited afterwards.", "reason_text is"),
        ("request_body", {"success": False, "variant": "", "message": NOTE}, "request_body is"),
    ],
)
def test_verify_audit_names_an_edited_decision(workspace, pm, column, value, named):
    outcome = decide(workspace, pm, concluded_fake())
    ConclusionAttempt.objects.filter(pk=outcome.attempt.pk).update(**{column: value})
    with pytest.raises(CommandError) as caught:
        call_command("verify_audit", stdout=StringIO())
    assert named in str(caught.value)
