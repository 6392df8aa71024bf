"""reconcile_conclusions: open attempts are resolved by reading, never by sending again; --report shows drift."""

from __future__ import annotations

import contextlib
import datetime as dt
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from experiments.mixpanel import client as mixpanel
from experiments.mixpanel.errors import MixpanelAuthError, MixpanelConfigError, MixpanelError, MixpanelUnavailable
from experiments.models import AttemptState, AuditEntry, ConclusionAttempt, ConclusionClaim, EntryKind
from experiments.selectors import conclusions as conclusion_selectors
from experiments.services import conclusions as conclusion_services
from experiments.services import reconcile as reconcile_services
from tests.factories import assert_chain_valid, past_the_in_flight_limit
from tests.fake_mixpanel import EXP_ID, FakeMixpanel, ProcessDied, install, raw_experiment

REQUESTED = EntryKind.CONCLUSION_REQUESTED
UNKNOWN = EntryKind.CONCLUSION_UNKNOWN
RECONCILED = EntryKind.CONCLUSION_RECONCILED


def press(workspace, user, client, experiment_id=EXP_ID):
    return conclusion_services.experiment_force_conclude(
        workspace=workspace,
        user=user,
        experiment_id=experiment_id,
        experiment_name="Checkout button colour",
        reason_category="broken",
        reason_text="Tracking broke.",
        end_date=timezone.now() - dt.timedelta(minutes=1),
        client=client,
    )


class DiesAfterSending:
    """The real client, in a process that dies right after the PUT returns or fails."""

    def __init__(self, client):
        self.client = client

    def get_experiment(self, workspace_id, experiment_id):
        return self.client.get_experiment(workspace_id, experiment_id)

    def force_conclude(self, workspace_id, experiment_id, *, end_date):
        with contextlib.suppress(MixpanelError):
            self.client.force_conclude(workspace_id, experiment_id, end_date=end_date)
        raise ProcessDied


def run(*args):
    """The command, run once every attempt so far is past its in-flight limit."""
    out = StringIO()
    with past_the_in_flight_limit():
        call_command("reconcile_conclusions", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def kinds(attempt):
    return list(AuditEntry.objects.filter(attempt=attempt).order_by("seq").values_list("kind", flat=True))


def only_attempt():
    return ConclusionAttempt.objects.get()


# --- crash between send and record, against the stand-in over HTTP -------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("fault", "applied"),
    [
        pytest.param(None, True, id="applied"),
        pytest.param("reset", False, id="not-applied"),
    ],
)
def test_crash_between_send_and_record_is_resolved_by_one_read(standin, workspace, pm, fault, applied):
    experiment = standin.find(1001, status="active")
    exp_id = experiment["id"]
    if fault:
        standin.set_fault(fault, experiment_id=exp_id, method="PUT", times=1)
    with pytest.raises(ProcessDied):
        press(workspace, pm, DiesAfterSending(mixpanel.client_for(workspace)), exp_id)
    attempt = only_attempt()
    assert attempt.state == AttemptState.REQUESTED  # the process died before recording
    assert kinds(attempt) == [REQUESTED]
    assert ConclusionClaim.objects.filter(attempt=attempt).exists()
    assert len(standin.requests(method="PUT")) == 1
    standin.clear_requests()

    output = run("--older-than", "0s")

    assert standin.requests(method="PUT") == []  # reconciling never sends again
    assert len(standin.requests(method="GET", path_contains=exp_id)) == 1
    attempt.refresh_from_db()
    assert kinds(attempt) == [REQUESTED, RECONCILED]
    payload = AuditEntry.objects.get(attempt=attempt, kind=RECONCILED).payload_data
    assert payload["previous_state"] == "requested"
    assert payload["snapshot"]["id"] == exp_id
    if applied:
        assert attempt.state == AttemptState.RECONCILED_APPLIED
        assert payload["outcome"] == "applied"
        assert payload["upstream_status"] == "concluded"
        assert payload["end_date_matches_request"] is True
        assert ConclusionClaim.objects.filter(attempt=attempt).exists()
        assert "applied" in output
    else:
        assert attempt.state == AttemptState.RECONCILED_NOT_APPLIED
        assert payload["outcome"] == "not_applied"
        assert payload["upstream_status"] == "active"
        assert not ConclusionClaim.objects.exists()
        assert "not applied" in output
        # The freed claim lets a person try again, as a new attempt.
        again = press(workspace, pm, mixpanel.client_for(workspace), exp_id)
        assert again.ok, again.message
    assert "1 of 1 open attempt(s) resolved." in output
    assert_chain_valid()
    # A second run finds nothing left to do.
    assert "No open attempts" in run("--older-than", "0s")


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("fault", "state"),
    [
        pytest.param("apply_then_drop", AttemptState.RECONCILED_APPLIED, id="applied-then-dropped"),
        pytest.param("apply_then_500", AttemptState.RECONCILED_APPLIED, id="applied-then-500"),
        pytest.param("reset", AttemptState.RECONCILED_NOT_APPLIED, id="reset-before-applying"),
        pytest.param("not_json", AttemptState.RECONCILED_NOT_APPLIED, id="malformed-not-applied"),
    ],
)
def test_unknown_outcome_from_the_stand_in_is_reconciled(standin, workspace, pm, fault, state):
    exp_id = standin.find(1001, status="active")["id"]
    standin.set_fault(fault, experiment_id=exp_id, method="PUT")
    outcome = press(workspace, pm, mixpanel.client_for(workspace), exp_id)
    assert outcome.state == AttemptState.UNKNOWN, outcome.message
    standin.clear_requests()

    run("--older-than", "0s")

    attempt = only_attempt()
    assert attempt.state == state
    assert kinds(attempt) == [REQUESTED, UNKNOWN, RECONCILED]
    assert standin.requests(method="PUT") == []
    assert ConclusionClaim.objects.exists() is (state == AttemptState.RECONCILED_APPLIED)


# --- the command's choices, with the in-memory fake ------------------------------------


@pytest.fixture
def stuck(workspace, pm):
    """An attempt left "requested" with its claim: the PUT never went out (applied=False)."""
    fake = FakeMixpanel(put=ProcessDied())
    with pytest.raises(ProcessDied):
        press(workspace, pm, fake)
    return only_attempt()


@pytest.mark.django_db
def test_young_attempts_are_left_to_finish(monkeypatch, stuck):
    fake = install(monkeypatch, FakeMixpanel())

    output = run()  # default --older-than 5m

    assert "No open attempts older than 0:05:00" in output
    assert fake.calls == []
    stuck.refresh_from_db()
    assert stuck.state == AttemptState.REQUESTED

    ConclusionAttempt.objects.filter(pk=stuck.pk).update(created_at=timezone.now() - dt.timedelta(minutes=6))
    run()
    stuck.refresh_from_db()
    assert stuck.state == AttemptState.RECONCILED_NOT_APPLIED
    assert [c[0] for c in fake.calls] == ["get"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "fake",
    [
        pytest.param(FakeMixpanel(get=MixpanelUnavailable("Mixpanel did not answer in time.")), id="down"),
        pytest.param(FakeMixpanel({1001: [raw_experiment(status="archived")]}), id="odd-status"),
        pytest.param(FakeMixpanel({1001: []}), id="gone"),
        pytest.param(FakeMixpanel(get=lambda ws, exp_id: raw_experiment(exp_id="other")), id="wrong-experiment"),
    ],
)
def test_unreadable_attempt_is_left_open_and_the_command_fails(monkeypatch, stuck, fake):
    install(monkeypatch, fake)
    entries_before = AuditEntry.objects.count()

    with pytest.raises(CommandError, match="0 of 1 open attempt") as caught:
        run("--older-than", "0s")

    assert caught.value.returncode == 1
    stuck.refresh_from_db()
    assert stuck.state == AttemptState.REQUESTED
    assert ConclusionClaim.objects.filter(attempt=stuck).exists()
    assert AuditEntry.objects.count() == entries_before
    assert fake.puts == []


@pytest.mark.django_db
def test_missing_credentials_are_reported_per_attempt(monkeypatch, stuck):
    def no_client(workspace):
        raise MixpanelConfigError()

    monkeypatch.setattr(mixpanel, "client_for", no_client)
    with pytest.raises(CommandError, match="left open"):
        run("--older-than", "0s")
    stuck.refresh_from_db()
    assert stuck.state == AttemptState.REQUESTED


@pytest.mark.django_db
@pytest.mark.parametrize("value", ["5", "five minutes", "-1m", "3w", ""])
def test_bad_duration_is_a_readable_error(value):
    with pytest.raises(CommandError, match="--older-than must look like 30s, 5m, 2h or 1d"):
        run(f"--older-than={value}")


@pytest.mark.django_db
def test_unknown_workspace_is_a_readable_error():
    with pytest.raises(CommandError, match="No workspace with id 999"):
        run("--workspace-id", "999")


@pytest.mark.django_db
def test_workspace_filter_leaves_other_workspaces_alone(monkeypatch, stuck, other_workspace):
    fake = install(monkeypatch, FakeMixpanel())
    assert "No open attempts" in run("--older-than", "0s", "--workspace-id", str(other_workspace.pk))
    assert fake.calls == []
    run("--older-than", "0s", "--workspace-id", str(stuck.workspace_id))
    stuck.refresh_from_db()
    assert stuck.state == AttemptState.RECONCILED_NOT_APPLIED


@pytest.mark.django_db
def test_resolved_attempts_are_skipped(workspace, pm):
    fake = FakeMixpanel()
    outcome = press(workspace, pm, fake)
    result = reconcile_services.conclusion_reconcile(attempt=outcome.attempt, client=fake)
    assert result.outcome == "skipped"
    assert kinds(outcome.attempt) == [REQUESTED, EntryKind.CONCLUSION_SUCCEEDED]
    assert [c[0] for c in fake.calls] == ["get", "put"]


@pytest.mark.django_db
def test_a_late_outcome_does_not_get_reconciled_twice(workspace, pm, stuck):
    """Two reconcilers that both read before either writes: only one entry is appended."""
    fake = FakeMixpanel()
    stale_copy = ConclusionAttempt.objects.get(pk=stuck.pk)
    with past_the_in_flight_limit():
        first = reconcile_services.conclusion_reconcile(attempt=stuck, client=fake)
        second = reconcile_services.conclusion_reconcile(attempt=stale_copy, client=fake)
    assert (first.outcome, second.outcome) == ("not_applied", "skipped")
    assert kinds(stuck) == [REQUESTED, RECONCILED]


# --- drift report ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_drift_lists_conclusions_made_outside_the_dashboard(standin, workspace, pm):
    ours = standin.find(1001, status="active")["id"]
    assert press(workspace, pm, mixpanel.client_for(workspace), ours).ok
    outside = standin.add_experiment(1001, name="Concluded by hand in Mixpanel", status="active")
    standin.set_status(1001, outside["id"], "success", last_modified_by_name="Mallory Manual")
    still_active = standin.add_experiment(1001, name="Still running", status="active")

    output = run("--report", "--workspace-id", str(workspace.pk))

    assert outside["id"] in output
    assert "Mallory Manual" in output
    assert ours not in output
    assert still_active["id"] not in output
    assert "concluded in Mixpanel with no conclusion recorded here" in output


@pytest.mark.django_db
def test_drift_selector_in_one_query(workspace, pm, django_assert_num_queries):
    fake = FakeMixpanel(
        {
            1001: [
                raw_experiment(exp_id="a", status="concluded"),
                raw_experiment(exp_id="b", status="fail", end_date="2026-11-20T00:00:00Z"),
                raw_experiment(exp_id="c", status="active"),
                raw_experiment(exp_id=EXP_ID, status="active"),
            ]
        }
    )
    assert press(workspace, pm, fake).ok  # EXP_ID: concluded by us
    failed = press(workspace, pm, FakeMixpanel({1001: [raw_experiment(exp_id="a")]}, put="answer:active"), "a")
    assert failed.state == AttemptState.FAILED

    with django_assert_num_queries(1):
        drift = conclusion_selectors.conclusion_drift(workspace=workspace, client=fake)

    assert [(d.experiment.id, d.local_states) for d in drift] == [("b", ()), ("a", ("failed",))]


@pytest.mark.django_db
def test_report_says_when_a_workspace_cannot_be_read(monkeypatch, workspace):
    install(monkeypatch, FakeMixpanel())
    monkeypatch.setattr(FakeMixpanel, "list_experiments", lambda self, ws: (_ for _ in ()).throw(MixpanelAuthError()))
    with pytest.raises(CommandError, match="Could not read: Growth: Mixpanel refused the service account"):
        run("--report")


@pytest.mark.django_db
def test_report_without_drift(monkeypatch, workspace):
    install(monkeypatch, FakeMixpanel({1001: [raw_experiment(status="active")]}))
    assert "No drift" in run("--report")
