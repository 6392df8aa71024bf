"""Force conclude under attack: the guarantees that once broke, replayed.

1. The experiment confirmed is the experiment concluded: an id from Mixpanel is
   never rewritten, so a near-twin id ("victim-exp" / " victim-exp") is another
   experiment, and the audit pairs the right id with the right name.
2. Reconciling never runs ahead of an in-flight PUT, whatever --older-than says,
   and an answer that comes after a reconciliation changes nothing but the trail.
3. verify_audit sees every field of an attempt an auditor reads: editing any of
   them in SQL makes it fail, with or without a digest.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import threading
import time
from io import StringIO
from pathlib import Path
from urllib.parse import quote

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from experiments import auditverify
from experiments.forms import datetime_local_value
from experiments.mixpanel import client as mixpanel
from experiments.mixpanel.errors import MixpanelOutcomeUnknown
from experiments.models import AttemptState, AuditEntry, ConclusionAttempt, ConclusionClaim, EntryKind
from experiments.selectors.audit import AUDIT_EXPORT_FIELDS
from experiments.services import conclusions as conclusion_services
from experiments.services import reconcile as reconcile_services
from experiments.services.attempts import STATE_BLOCKED
from tests.factories import assert_chain_valid, make_attempt, past_the_in_flight_limit
from tests.fake_mixpanel import FakeMixpanel, raw_experiment

ROOT = Path(__file__).resolve().parent.parent
HTMX = {"HTTP_HX_REQUEST": "true"}
VICTIM, TWIN = "victim-exp", " victim-exp"


def kinds(attempt):
    return list(AuditEntry.objects.filter(attempt=attempt).order_by("seq").values_list("kind", flat=True))


def press(workspace, user, client, experiment_id, name="Checkout"):
    return conclusion_services.experiment_force_conclude(
        workspace=workspace,
        user=user,
        experiment_id=experiment_id,
        experiment_name=name,
        reason_category="business",
        reason_text="Stop it.",
        end_date=timezone.now() - dt.timedelta(minutes=1),
        client=client,
    )


# --- 1. the experiment confirmed is the experiment concluded ------------------------------


@pytest.mark.django_db
def test_confirming_a_near_twin_id_concludes_that_experiment_only(standin, pm_client, workspace):
    standin.add_experiment(1001, id=VICTIM, name="The victim", start_date="2026-01-01T00:00:00Z")
    standin.add_experiment(1001, id=TWIN, name="The twin", start_date="2026-01-01T00:00:00Z")
    url = reverse("experiments:experiment-force-conclude", args=[workspace.pk, TWIN])
    form = {
        "reason_category": "business",
        "reason_text": "Stop the twin.",
        "end_date": datetime_local_value(timezone.now()),
    }

    response = pm_client.post(url, form, **HTMX)

    assert response.status_code == 200
    puts = standin.requests(method="PUT")
    assert [record.path.endswith(f"/experiments/{quote(TWIN, safe='')}/force_conclude") for record in puts] == [True]
    assert standin.experiment(1001, TWIN)["status"] == "concluded"
    assert standin.experiment(1001, VICTIM)["status"] == "active"
    attempt = ConclusionAttempt.objects.get()
    assert (attempt.experiment_id, attempt.experiment_name) == (TWIN, "The twin")
    entries = AuditEntry.objects.filter(attempt=attempt)
    assert {(e.experiment_id, e.experiment_name) for e in entries} == {(TWIN, "The twin")}
    assert_chain_valid()


@pytest.mark.django_db
def test_an_id_mixpanel_does_not_know_exactly_is_never_sent(workspace, pm):
    fake = FakeMixpanel({1001: [raw_experiment(exp_id=VICTIM)]})

    outcome = press(workspace, pm, fake, TWIN)

    assert not outcome.ok
    assert fake.puts == []
    assert [call[2] for call in fake.calls] == [TWIN]  # read as given, not cleaned up
    assert fake.status_of(1001, VICTIM) == "active"
    assert outcome.attempt.experiment_id == TWIN


# --- 2. reconciling never runs ahead of an in-flight PUT ----------------------------------


@pytest.mark.django_db
def test_an_attempt_is_not_judged_before_its_put_could_have_finished(workspace, pm):
    fake = FakeMixpanel(put=MixpanelOutcomeUnknown("no answer"))
    attempt = press(workspace, pm, fake, raw_experiment()["id"]).attempt
    assert attempt.state == AttemptState.UNKNOWN
    reads = len(fake.calls)

    result = reconcile_services.conclusion_reconcile(attempt=attempt, client=fake)

    assert result.outcome == "too_early"
    assert not result.resolved
    assert len(fake.calls) == reads  # not even read
    attempt.refresh_from_db()
    assert attempt.state == AttemptState.UNKNOWN
    assert ConclusionClaim.objects.get().attempt_id == attempt.pk
    limit = reconcile_services.in_flight_limit()
    assert reconcile_services.attempt_judgeable_at(attempt) == attempt.created_at + limit
    assert limit > dt.timedelta(seconds=mixpanel.write_deadline_seconds())


@pytest.mark.django_db
def test_older_than_zero_does_not_reach_an_attempt_still_in_flight(workspace, pm, monkeypatch):
    fake = FakeMixpanel(put=MixpanelOutcomeUnknown("no answer"))
    press(workspace, pm, fake, raw_experiment()["id"])
    monkeypatch.setattr(mixpanel, "client_for", lambda workspace: fake)
    calls = len(fake.calls)

    out = StringIO()
    call_command("reconcile_conclusions", "--older-than", "0s", stdout=out)

    assert "No open attempts" in out.getvalue()
    assert len(fake.calls) == calls
    assert ConclusionAttempt.objects.get().state == AttemptState.UNKNOWN


@pytest.mark.django_db
def test_a_late_answer_after_a_reconciliation_changes_nothing_else(workspace, pm):
    """The PUT outlives its limit; a reconcile reads "active" meanwhile and releases the
    claim. When the PUT's answer finally comes, it is kept as evidence and moves nothing."""
    seen = {}

    def put_outliving_its_limit(fake, ws, exp_id, end_date):
        attempt = ConclusionAttempt.objects.get()
        with past_the_in_flight_limit():
            seen["reconciled"] = reconcile_services.conclusion_reconcile(attempt=attempt, client=fake)
        return fake.applied(ws, exp_id, end_date)

    fake = FakeMixpanel(put=put_outliving_its_limit)
    outcome = press(workspace, pm, fake, raw_experiment()["id"])

    assert seen["reconciled"].outcome == "not_applied"
    assert not outcome.ok
    attempt = ConclusionAttempt.objects.get()
    assert attempt.state == AttemptState.RECONCILED_NOT_APPLIED
    assert attempt.http_status is None
    assert ConclusionClaim.objects.count() == 0
    assert kinds(attempt) == [
        EntryKind.CONCLUSION_REQUESTED,
        EntryKind.CONCLUSION_RECONCILED,
        EntryKind.CONCLUSION_LATE_ANSWER,
    ]
    late = AuditEntry.objects.get(kind=EntryKind.CONCLUSION_LATE_ANSWER).payload_data
    assert late["reported_state"] == AttemptState.SUCCEEDED
    assert "attempt" not in late
    assert_chain_valid()


def _database_url() -> str:
    db = connection.settings_dict
    password = f":{quote(db['PASSWORD'], safe='')}" if db.get("PASSWORD") else ""
    return f"postgres://{db['USER']}{password}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


@pytest.mark.django_db(transaction=True)
def test_reconcile_in_another_process_during_a_stalled_put(standin, workspace, pm, settings):
    """Process 1 presses and its PUT stalls in the stand-in; process 2 runs
    `reconcile_conclusions --older-than 0s` meanwhile; then a second press. One PUT."""
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL: a second process must see this one's committed rows")
    settings.MIXPANEL_DEADLINE = 30.0
    settings.MIXPANEL_WRITE_DEADLINE = 30.0
    settings.MIXPANEL_READ_TIMEOUT = 30.0
    experiment = standin.find(1001, status="active")
    standin.set_fault("stall", experiment_id=experiment["id"], method="PUT", stall_seconds=60)
    outcomes = []

    def first_press() -> None:
        try:
            outcomes.append(press(workspace, pm, mixpanel.client_for(workspace), experiment["id"]))
        finally:
            mixpanel.reset_clients()
            connection.close()

    pressing = threading.Thread(target=first_press)
    pressing.start()
    try:
        _wait_for(lambda: len(standin.requests(method="PUT")) == 1)
        env = {
            **os.environ,
            "DATABASE_URL": _database_url(),
            "MIXPANEL_API_BASE_URL": standin.url,
            "MIXPANEL_DEADLINE": "30",
            "MIXPANEL_WRITE_DEADLINE": "30",
        }
        reconcile = subprocess.run(
            [sys.executable, "manage.py", "reconcile_conclusions", "--older-than", "0s"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert reconcile.returncode == 0, reconcile.stderr
        assert pressing.is_alive()  # the PUT was still in flight all along
        assert ConclusionAttempt.objects.get().state == AttemptState.REQUESTED
        assert ConclusionClaim.objects.count() == 1

        second = press(workspace, pm, mixpanel.client_for(workspace), experiment["id"])
        assert second.state == STATE_BLOCKED
        assert len(standin.requests(method="PUT")) == 1
    finally:
        standin.reset()  # ends the stall: the PUT's connection closes without an answer
        pressing.join(timeout=60)
    first = ConclusionAttempt.objects.get(pk=outcomes[0].attempt.pk)
    assert first.state == AttemptState.UNKNOWN  # the connection closed without an answer
    assert ConclusionClaim.objects.get().attempt_id == first.pk
    assert_chain_valid()


def _wait_for(condition, seconds: float = 20) -> None:
    waited = 0.0
    while not condition():
        assert waited < seconds, "the stalled PUT never reached the stand-in"
        time.sleep(0.05)
        waited += 0.05


# --- 3. verify_audit sees every field an auditor reads ------------------------------------

FORGERIES = {
    "action": "decision",
    "reason_text": "Forged reason",
    "actor_name": "Mallory (mallory)",
    "experiment_name": "Some other experiment",
    "experiment_id": "exp-other",
    "reason_category": "other",
    "end_date": dt.datetime(2020, 1, 1, tzinfo=dt.UTC),
    "request_body": {"end_date": "2020-01-01T00:00:00Z"},
    "created_at": dt.datetime(2020, 1, 1, tzinfo=dt.UTC),
    "state": AttemptState.FAILED,
    "failure_reason": "Forged failure",
    "http_status": 500,
    "duration_ms": 1,
    "finished_at": dt.datetime(2020, 1, 1, tzinfo=dt.UTC),
    "expires_at": dt.datetime(2020, 1, 2, tzinfo=dt.UTC),
    "reviewer_name": "Mallory (mallory)",
    "review_note": "Forged approval note",
    "reviewed_at": dt.datetime(2020, 1, 1, tzinfo=dt.UTC),
}


def test_every_exported_attempt_column_is_checked():
    # seq and hash are read from the attempt's entries, the chain verify_audit walks itself.
    exported = {name for name in AUDIT_EXPORT_FIELDS if "__" not in name} - {"id", "seq", "hash"}
    assert exported <= set(auditverify.ATTEMPT_FIELDS)
    # Ids of other rows: forging those is covered by the checked columns' own tests.
    assert exported <= set(FORGERIES) | {"workspace_id", "actor_id", "reviewer_id"}


@pytest.mark.django_db
@pytest.mark.parametrize("column", sorted(FORGERIES))
@pytest.mark.parametrize("with_digest", [False, True], ids=["chain", "digest"])
def test_editing_a_shown_field_in_sql_fails_verify_audit(workspace, pm, tmp_path, column, with_digest):
    attempt = make_attempt(workspace=workspace, actor=pm)
    digest = tmp_path / "digest.json"
    call_command("audit_digest", "--output", str(digest), stdout=StringIO())
    ConclusionAttempt.objects.filter(pk=attempt.pk).update(**{column: FORGERIES[column]})

    args = ["--digest", str(digest)] if with_digest else []
    with pytest.raises(CommandError, match=rf"attempt #{attempt.pk}: {column} is "):
        call_command("verify_audit", *args, stdout=StringIO())
