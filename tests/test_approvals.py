"""Two-person approval: a press becomes a request; only an approval by someone else sends, once."""

from __future__ import annotations

import datetime as dt
import threading
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone

from experiments.models import AttemptState, AuditEntry, ConclusionAttempt, ConclusionClaim, EntryKind, Membership, Role
from experiments.services import approvals
from experiments.services.attempts import STATE_BLOCKED
from tests.factories import _clock_shifted, assert_chain_valid, workspace_settings_set
from tests.fake_mixpanel import FakeMixpanel
from tests.test_services_force_conclude import conclude, kinds
from tests.test_tasks import make_due, run_ready_tasks, waiting

pytestmark = pytest.mark.django_db


def request_it(workspace, pm, fake):
    outcome = conclude(workspace, pm, fake)
    assert outcome.state == AttemptState.AWAITING_APPROVAL
    return outcome.attempt


def review(attempt, user, decision, note="", fake=None):
    return approvals.attempt_review(
        attempt=ConclusionAttempt.objects.get(pk=attempt.pk), user=user, decision=decision, note=note, client=fake
    )


def test_a_press_in_a_workspace_that_requires_approval_sends_nothing_and_holds_the_claim(approving, pm):
    fake = FakeMixpanel()
    outcome = conclude(approving, pm, fake)
    attempt = ConclusionAttempt.objects.get()
    assert outcome.state == attempt.state == AttemptState.AWAITING_APPROVAL
    assert "waits for another concluder or admin" in outcome.message
    assert fake.puts == []
    # One read, so the request records the experiment as it was when asked.
    assert fake.get_calls == [attempt.experiment_id]
    assert attempt.experiment_modified is not None or attempt.plan_hash
    assert kinds(attempt) == [EntryKind.APPROVAL_REQUESTED]
    assert ConclusionClaim.objects.get().attempt_id == attempt.pk
    assert attempt.expires_at == attempt.created_at + dt.timedelta(hours=24)
    # Its one queued task is the expiry, at the end of the window; no reconcile of a PUT never sent.
    [task] = waiting()
    assert task.task_path.endswith("expire_request")
    assert task.run_after == attempt.expires_at
    assert_chain_valid()


def test_a_second_person_approves_and_exactly_one_put_is_sent(approving, pm, second):
    fake = FakeMixpanel()
    attempt = request_it(approving, pm, fake)
    outcome = review(attempt, second, approvals.APPROVE, "Looks right.", fake)
    attempt.refresh_from_db()
    assert outcome.ok
    assert attempt.state == AttemptState.SUCCEEDED
    assert len(fake.puts) == 1
    assert kinds(attempt) == [EntryKind.APPROVAL_REQUESTED, EntryKind.APPROVAL_APPROVED, EntryKind.CONCLUSION_SUCCEEDED]
    # The press stays the requester's; the approval is the second person's, with their note.
    assert attempt.actor == pm
    assert attempt.reviewer == second
    assert attempt.review_note == "Looks right."
    approved = AuditEntry.objects.get(kind=EntryKind.APPROVAL_APPROVED)
    assert approved.actor == second
    # A second approval (or a double click) sends nothing more.
    again = review(attempt, second, approvals.APPROVE, "", fake)
    assert not again.ok
    assert "already approved" in again.message
    assert len(fake.puts) == 1
    assert_chain_valid()


# --- One person, one approval ----------------------------------------------------------------


def account(django_user_model, workspace, username, *, email="", role=Role.CONCLUDER, subject=None, issuer=None):
    from experiments.models import ExternalIdentity

    user = django_user_model.objects.create_user(username=username, email=email, first_name=username.title())
    Membership.objects.create(user=user, workspace=workspace, role=role)
    if subject is not None:
        ExternalIdentity.objects.create(user=user, issuer=issuer or "trusted-proxy-header", subject=subject)
    return user


@pytest.mark.parametrize(
    ("requester", "approver", "shared"),
    [
        # The break-glass password account and the proxy account of one person: the same address.
        (
            {"username": "pat@example.com", "email": "pat@example.com", "subject": "pat@example.com"},
            {"username": "pat-breakglass", "email": "Pat@Example.com "},
            "the e-mail address pat@example.com",
        ),
        # A proxy account made for "pat" beside the password account "pat" (no address on either).
        (
            {"username": "pat-5f3c2a1b", "subject": "pat"},
            {"username": "pat"},
            "the sign-in identity pat",
        ),
        # An SSO account whose sign-in name is the other account's address.
        (
            {"username": "pat-sso", "subject": "pat@example.com", "issuer": "https://id.example.com"},
            {"username": "admin-2", "email": "pat@example.com"},
            "the sign-in identity pat@example.com",
        ),
    ],
)
def test_one_person_with_two_accounts_cannot_approve_their_own_request(
    approving, django_user_model, requester, approver, shared
):
    """Before, the second account approved, and the request was sent on one person's word."""
    asker = account(django_user_model, approving, **requester)
    other = account(django_user_model, approving, role=Role.ADMIN, **approver)
    fake = FakeMixpanel()
    attempt = request_it(approving, asker, fake)
    outcome = review(attempt, other, approvals.APPROVE, "", fake)
    assert not outcome.ok
    assert shared in outcome.message
    assert "count as one person" in outcome.message
    assert "Nothing was sent" in outcome.message
    assert fake.puts == []
    attempt.refresh_from_db()
    assert attempt.state == AttemptState.AWAITING_APPROVAL
    assert kinds(attempt) == [EntryKind.APPROVAL_REQUESTED]
    # Rejecting is still theirs to do (a second account's rejection is a rejection, with a note).
    assert review(attempt, other, approvals.REJECT, "Not like this.", fake).state == AttemptState.REJECTED


def test_two_people_without_addresses_or_shared_names_are_two_approvers(approving, django_user_model):
    asker = account(django_user_model, approving, "rita", subject="rita-sub-1", issuer="https://id.example.com")
    other = account(django_user_model, approving, "carl", subject="carl", role=Role.ADMIN)
    fake = FakeMixpanel()
    outcome = review(request_it(approving, asker, fake), other, approvals.APPROVE, "", fake)
    assert outcome.ok, outcome.message
    assert len(fake.puts) == 1


def test_nobody_approves_their_own_request(approving, pm):
    fake = FakeMixpanel()
    attempt = request_it(approving, pm, fake)
    outcome = review(attempt, pm, approvals.APPROVE, "", fake)
    assert outcome.message == approvals.MSG_SELF_APPROVAL
    attempt.refresh_from_db()
    assert attempt.state == AttemptState.AWAITING_APPROVAL
    assert fake.puts == []
    assert kinds(attempt) == [EntryKind.APPROVAL_REQUESTED]


def test_a_superuser_requester_cannot_approve_their_own_either(approving, django_user_model):
    boss = django_user_model.objects.create_superuser(username="boss", password="pw-boss")
    fake = FakeMixpanel()
    attempt = request_it(approving, boss, fake)
    assert review(attempt, boss, approvals.APPROVE, "", fake).message == approvals.MSG_SELF_APPROVAL
    assert fake.puts == []


def test_viewers_and_outsiders_cannot_review(approving, pm, teammate, outsider):
    fake = FakeMixpanel()
    attempt = request_it(approving, pm, fake)
    for person in (teammate, outsider):
        for decision in (approvals.APPROVE, approvals.REJECT):
            assert review(attempt, person, decision, "no", fake).message == approvals.MSG_FORBIDDEN
    attempt.refresh_from_db()
    assert attempt.state == AttemptState.AWAITING_APPROVAL
    assert fake.puts == []


def test_a_rejection_needs_a_note_closes_the_request_and_frees_the_experiment(approving, pm, second):
    fake = FakeMixpanel()
    attempt = request_it(approving, pm, fake)
    assert review(attempt, second, approvals.REJECT, "  ").message.startswith("Say why you reject it")
    outcome = review(attempt, second, approvals.REJECT, "Wait for the holiday traffic to pass.")
    attempt.refresh_from_db()
    assert attempt.state == AttemptState.REJECTED
    assert "Wait for the holiday" in attempt.failure_reason
    assert outcome.message.startswith("Rejected")
    assert not ConclusionClaim.objects.exists()
    assert review(attempt, second, approvals.APPROVE, "", fake).message.startswith("This request was already rejected")
    assert fake.puts == []
    # The experiment is free again: a new press makes a new request.
    assert conclude(approving, pm, fake).state == AttemptState.AWAITING_APPROVAL
    assert_chain_valid()


def test_the_requester_may_withdraw_without_a_note(approving, pm):
    attempt = request_it(approving, pm, FakeMixpanel())
    outcome = review(attempt, pm, approvals.REJECT, "")
    assert outcome.message.startswith("Withdrawn")
    assert outcome.state == AttemptState.WITHDRAWN
    attempt.refresh_from_db()
    # A withdrawal is its own outcome: nobody reviewed it, so it has no reviewer.
    assert attempt.state == AttemptState.WITHDRAWN
    assert attempt.reviewer is None
    assert attempt.reviewer_name == attempt.review_note == ""
    assert attempt.reviewed_at is None
    assert attempt.failure_reason == "Withdrawn by the requester. Nothing was sent."
    assert not ConclusionClaim.objects.exists()
    assert kinds(attempt) == [EntryKind.APPROVAL_REQUESTED, EntryKind.APPROVAL_WITHDRAWN]
    withdrawn = AuditEntry.objects.get(kind=EntryKind.APPROVAL_WITHDRAWN)
    assert withdrawn.actor == pm
    assert (
        review(attempt, pm, approvals.REJECT, "").message
        == "This request was already withdrawn by Pat (pat). Nothing was sent."
    )
    assert_chain_valid()


def test_an_expired_request_sends_nothing_and_is_closed_once(approving, pm, second):
    fake = FakeMixpanel()
    attempt = request_it(approving, pm, fake)
    with _clock_shifted(dt.timedelta(hours=24, seconds=1)):
        outcome = review(attempt, second, approvals.APPROVE, "", fake)
        assert outcome.message.startswith("This request expired at")
        # The queued expiry task finds it already closed.
        [task] = waiting()
        make_due(task)
        assert [r.return_value for r in run_ready_tasks()] == [f"already {AttemptState.EXPIRED}"]
    attempt.refresh_from_db()
    assert attempt.state == AttemptState.EXPIRED
    assert fake.puts == []
    assert kinds(attempt) == [EntryKind.APPROVAL_REQUESTED, EntryKind.APPROVAL_EXPIRED]
    assert not ConclusionClaim.objects.exists()
    assert_chain_valid()


def test_the_expiry_task_closes_an_unanswered_request_when_its_window_ends(approving, pm):
    approving.approval_window_hours = 2
    approving.save()
    attempt = request_it(approving, pm, FakeMixpanel())
    assert attempt.expires_at == attempt.created_at + dt.timedelta(hours=2)
    [task] = waiting()
    make_due(task)
    # Due by the queue but not by the clock (a worker whose clock is behind): looked at later.
    assert [r.return_value for r in run_ready_tasks()] == ["waiting until its window ends"]
    with _clock_shifted(dt.timedelta(hours=2, seconds=1)):
        [task] = waiting()
        make_due(task)
        assert [r.return_value for r in run_ready_tasks()] == ["expired"]
    attempt.refresh_from_db()
    assert attempt.state == AttemptState.EXPIRED
    assert "within 2 h" in attempt.failure_reason
    entry = AuditEntry.objects.get(kind=EntryKind.APPROVAL_EXPIRED)
    assert entry.actor is None
    assert entry.actor_name == approvals.EXPIRY_NAME


def test_a_press_that_finds_an_overdue_request_closes_it_and_asks_anew(approving, pm, second):
    fake = FakeMixpanel()
    first = request_it(approving, pm, fake)
    with _clock_shifted(dt.timedelta(hours=25)):
        outcome = conclude(approving, second, fake)
    assert outcome.state == AttemptState.AWAITING_APPROVAL
    assert outcome.attempt.pk != first.pk
    first.refresh_from_db()
    assert first.state == AttemptState.EXPIRED


def test_a_press_while_a_request_waits_is_refused_and_recorded(approving, pm, second):
    fake = FakeMixpanel()
    request_it(approving, pm, fake)
    outcome = conclude(approving, second, fake)
    assert outcome.state == STATE_BLOCKED
    assert "waits for approval" in outcome.message
    blocked = outcome.attempt
    assert kinds(blocked) == [EntryKind.CONCLUSION_REQUESTED, EntryKind.CONCLUSION_FAILED]
    assert fake.puts == []
    assert_chain_valid()


def test_an_approval_for_someone_who_lost_the_role_is_refused(approving, pm, second):
    fake = FakeMixpanel()
    attempt = request_it(approving, pm, fake)
    Membership.objects.filter(user=pm).update(role=Role.VIEWER)
    outcome = review(attempt, second, approvals.APPROVE, "", fake)
    assert "may no longer force conclude" in outcome.message
    assert fake.puts == []


def test_an_approved_request_is_reconciled_from_its_approval_not_its_asking(approving, pm, second, monkeypatch):
    """A request approved 20 hours after it was made must not be judged while its PUT may fly."""
    from experiments.services import reconcile as reconcile_services

    fake = FakeMixpanel()
    attempt = request_it(approving, pm, fake)
    with _clock_shifted(dt.timedelta(hours=20)):
        approved_at = timezone.now()
        approvals._mark_approved(ConclusionAttempt.objects.get(pk=attempt.pk), second, "")
        attempt.refresh_from_db()
        assert attempt.reviewed_at >= approved_at
        assert (
            reconcile_services.attempt_judgeable_at(attempt)
            == attempt.reviewed_at + reconcile_services.in_flight_limit()
        )
        reads = list(fake.get_calls)
        result = reconcile_services.conclusion_reconcile(attempt=attempt, client=fake)
        assert result.outcome == "too_early"
        assert fake.get_calls == reads
    # Its reconcile task is queued for then, beside the (now pointless) expiry task.
    paths = sorted(task.task_path.rsplit(".", 1)[1] for task in waiting())
    assert paths == ["expire_request", "reconcile_attempt"]


def test_verify_audit_checks_the_review_columns(approving, pm, second):
    attempt = request_it(approving, pm, FakeMixpanel())
    review(attempt, second, approvals.REJECT, "Not yet.")
    assert_chain_valid()
    ConclusionAttempt.objects.filter(pk=attempt.pk).update(review_note="Fine by me.")
    with pytest.raises(CommandError) as caught:
        call_command("verify_audit", stdout=StringIO())
    assert "review_note" in str(caught.value)


@pytest.mark.django_db(transaction=True)
def test_two_approvers_at_once_send_one_put(workspace, pm, second, ws_admin):
    if connection.vendor != "postgresql":
        pytest.skip("two threads writing at once need PostgreSQL; SQLite serialises them")
    workspace_settings_set(workspace, requires_approval=True)
    fake = FakeMixpanel(put_delay=0.2)
    attempt = request_it(workspace, pm, fake)
    barrier = threading.Barrier(2)
    outcomes = []

    def approve(user):
        try:
            barrier.wait()
            outcomes.append(review(attempt, user, approvals.APPROVE, "", fake))
        finally:
            connection.close()

    threads = [threading.Thread(target=approve, args=(u,)) for u in (second, ws_admin)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(fake.puts) == 1
    assert sorted(o.ok for o in outcomes) == [False, True]
    assert AuditEntry.objects.filter(kind=EntryKind.APPROVAL_APPROVED).count() == 1


def test_reconcile_conclusions_closes_requests_whose_expiry_task_never_ran(approving, pm):
    attempt = request_it(approving, pm, FakeMixpanel())
    out = StringIO()
    call_command("reconcile_conclusions", stdout=out)
    attempt.refresh_from_db()
    assert attempt.state == AttemptState.AWAITING_APPROVAL
    with _clock_shifted(dt.timedelta(hours=24, seconds=1)):
        call_command("reconcile_conclusions", stdout=out)
    attempt.refresh_from_db()
    assert attempt.state == AttemptState.EXPIRED
    assert f"Request #{attempt.pk} on Checkout button colour (Growth) expired unapproved." in out.getvalue()
    assert_chain_valid()
