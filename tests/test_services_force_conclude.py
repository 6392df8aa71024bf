"""experiment_force_conclude: every upstream outcome leaves the right audit entries and claim state."""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading

import pytest
from django.db import DatabaseError, connection
from django.utils import timezone

from experiments import audit_payloads, dates
from experiments.mixpanel.errors import (
    MixpanelAuthError,
    MixpanelBadResponse,
    MixpanelOutcomeUnknown,
    MixpanelRateLimited,
    MixpanelRejected,
    MixpanelUnavailable,
)
from experiments.mixpanel.experiment import ConcludeResult, format_end_date, parse_experiment
from experiments.models import AttemptState, AuditEntry, ConclusionAttempt, ConclusionClaim, EntryKind
from experiments.selectors import experiment_list as list_selectors
from experiments.services import conclusions as conclusion_services
from experiments.services import reconcile as reconcile_services
from experiments.services.attempts import STATE_BLOCKED
from tests.factories import assert_chain_valid, past_the_in_flight_limit
from tests.fake_mixpanel import EXP_ID, FakeMixpanel, raw_experiment

CANARY = "CANARY-s3cr3t-do-not-leak"
REQUESTED = EntryKind.CONCLUSION_REQUESTED
SUCCEEDED = EntryKind.CONCLUSION_SUCCEEDED
FAILED = EntryKind.CONCLUSION_FAILED
UNKNOWN = EntryKind.CONCLUSION_UNKNOWN
RECONCILED = EntryKind.CONCLUSION_RECONCILED


def conclude(workspace, user, client, **overrides):
    kwargs = {
        "workspace": workspace,
        "user": user,
        "experiment_id": EXP_ID,
        "experiment_name": "Checkout button colour",
        "reason_category": "significance",
        "reason_text": "Green won clearly.",
        "end_date": timezone.now() - dt.timedelta(minutes=1),
        "client": client,
    }
    kwargs.update(overrides)
    return conclusion_services.experiment_force_conclude(**kwargs)


def kinds(attempt):
    return list(AuditEntry.objects.filter(attempt=attempt).order_by("seq").values_list("kind", flat=True))


def last_payload(attempt):
    return AuditEntry.objects.filter(attempt=attempt).order_by("-seq").first().payload_data


def claim_holder():
    claim = ConclusionClaim.objects.filter(experiment_id=EXP_ID).first()
    return claim.attempt_id if claim else None


def assert_outcome(outcome, *, state, entries, claimed, puts, fake):
    """The shared shape of every case: projection, entries in order, chain, claim, PUT count."""
    attempt = ConclusionAttempt.objects.get(pk=outcome.attempt.pk)
    assert outcome.state == state
    assert attempt.state == state
    assert kinds(attempt) == entries
    assert_chain_valid()
    assert claim_holder() == (attempt.pk if claimed else None)
    assert len(fake.puts) == puts
    assert outcome.ok is (state == AttemptState.SUCCEEDED)
    assert outcome.message
    if state != AttemptState.REQUESTED:
        assert attempt.finished_at is not None
    return attempt


# --- success ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_success_records_request_and_returned_experiment(workspace, pm, monkeypatch):
    invalidated = []
    monkeypatch.setattr(list_selectors, "invalidate_experiment_list", lambda *, workspace: invalidated.append(1))
    fake = FakeMixpanel()
    end = timezone.now().replace(microsecond=0) - dt.timedelta(minutes=5)

    outcome = conclude(workspace, pm, fake, end_date=end)

    attempt = assert_outcome(
        outcome, state=AttemptState.SUCCEEDED, entries=[REQUESTED, SUCCEEDED], claimed=True, puts=1, fake=fake
    )
    assert fake.calls[0][0] == "get"  # read before the PUT
    assert fake.status_of() == "concluded"
    assert attempt.http_status == 200
    assert attempt.duration_ms is not None
    assert attempt.actor_name == "Pat (pat)"
    assert attempt.request_body == {"end_date": format_end_date(end)}
    assert outcome.experiment.status == "concluded"
    assert "No decision was recorded" in outcome.message
    assert invalidated == [1]

    requested = AuditEntry.objects.get(attempt=attempt, kind=REQUESTED).payload_data
    assert requested["attempt"]["request_body"] == {"end_date": format_end_date(end)}
    assert requested["attempt"]["reason_category"] == "significance"
    assert requested["attempt"]["reason_text"] == "Green won clearly."

    done = last_payload(attempt)
    assert done["attempt"]["state"] == "succeeded"
    assert done["attempt"]["http_status"] == 200
    assert (done["before_summary"]["status"], done["response"]["summary"]["status"]) == ("active", "concluded")
    assert done["before"]["status"] == "active"
    assert done["before"]["name"] == "Checkout button <b>colour</b>"  # as received, untouched
    assert json.loads(done["response"]["body"])["results"]["status"] == "concluded"
    assert done["response"]["truncated"] is False
    assert done["response"]["summary"]["variants"] == 2
    assert done["response"]["summary"]["exposures"] == 238


@pytest.mark.django_db(transaction=True)
def test_no_transaction_is_open_during_upstream_calls(workspace, pm):
    fake = FakeMixpanel(check_no_transaction=True)

    outcome = conclude(workspace, pm, fake)

    assert outcome.ok
    assert [c[0] for c in fake.calls] == ["get", "put"]
    assert fake.atomic_during_calls == [False, False]
    # Both leave from the caller's thread, in order: no other thread is involved.
    assert fake.call_threads == [threading.get_ident()] * 2
    # ...and the intent was committed before the PUT: visible from a fresh read.
    assert AuditEntry.objects.filter(attempt=outcome.attempt, kind=REQUESTED).exists()


@pytest.mark.django_db(transaction=True)
def test_requested_entry_is_committed_before_the_put(workspace, pm):
    seen = {}

    def look_from_another_connection():
        # Another thread has its own connection, so it sees only committed rows.
        try:
            seen["requested"] = AuditEntry.objects.filter(kind=REQUESTED).count()
            seen["claim"] = ConclusionClaim.objects.count()
        finally:
            connection.close()

    def put(fake, ws, exp_id, end_date):
        thread = threading.Thread(target=look_from_another_connection)
        thread.start()
        thread.join()
        return fake.applied(ws, exp_id, end_date)

    fake = FakeMixpanel(put=put)
    outcome = conclude(workspace, pm, fake)
    assert outcome.ok
    assert seen == {"requested": 1, "claim": 1}


@pytest.mark.django_db
def test_large_answer_is_stored_capped_with_a_marker(workspace, pm):
    big = "x" * (audit_payloads.SNAPSHOT_MAX_BYTES + 10)

    def put(fake, ws, exp_id, end_date):
        returned = fake._apply(ws, exp_id, end_date)
        body = json.dumps({"status": "ok", "results": dict(returned, description=big)})
        return ConcludeResult(experiment=parse_experiment(returned), http_status=200, duration_ms=5, raw_body=body)

    fake = FakeMixpanel({1001: [raw_experiment(description=big)]}, put=put)
    outcome = conclude(workspace, pm, fake)

    assert outcome.ok
    done = last_payload(outcome.attempt)
    assert done["response"]["truncated"] is True
    assert len(done["response"]["body"].encode()) <= audit_payloads.SNAPSHOT_MAX_BYTES
    assert done["before"]["truncated"] is True
    assert len(done["before"]["text"].encode()) <= audit_payloads.SNAPSHOT_MAX_BYTES


# --- definite failures: claim released, a person may try again --------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("error", "expected"),
    [
        pytest.param(
            MixpanelRejected("Mixpanel rejected the request (HTTP 400): bad end_date", http_status=400),
            "bad end_date",
            id="refused",
        ),
        pytest.param(
            MixpanelRateLimited(
                "Mixpanel is rate limiting us (HTTP 429). Try again in 30 seconds.", http_status=429, retry_after=30
            ),
            "Try again in 30 seconds",
            id="rate-limited",
        ),
        pytest.param(
            MixpanelAuthError("The service account has no access to this workspace (HTTP 403).", http_status=403),
            "no access",
            id="auth",
        ),
        pytest.param(
            MixpanelRejected("Mixpanel answered HTTP 200 but reported an error: locked", http_status=200),
            "reported an error: locked",
            id="200-with-error",
        ),
        pytest.param(
            MixpanelUnavailable("Mixpanel could not be reached (no connection could be made)."),
            "could not be reached",
            id="never-connected",
        ),
    ],
)
def test_definite_put_failure_releases_the_claim(workspace, pm, error, expected):
    fake = FakeMixpanel(put=error)

    outcome = conclude(workspace, pm, fake)

    attempt = assert_outcome(
        outcome, state=AttemptState.FAILED, entries=[REQUESTED, FAILED], claimed=False, puts=1, fake=fake
    )
    assert expected in outcome.message
    assert "nothing was changed" in outcome.message
    assert outcome.state == AttemptState.FAILED
    assert expected in attempt.failure_reason
    assert attempt.http_status == error.http_status
    done = last_payload(attempt)
    assert done["error"]["type"] == type(error).__name__
    assert done["before"]["status"] == "active"
    assert done["claim_released"] is True
    assert fake.status_of() == "active"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("upstream", "get", "expected"),
    [
        pytest.param({1001: []}, None, "has no experiment", id="not-found"),
        pytest.param({2002: [raw_experiment()]}, None, "has no experiment", id="not-in-this-workspace"),
        pytest.param(
            {1001: [raw_experiment()]},
            lambda ws, exp_id: raw_experiment(exp_id="another-one"),
            "different experiment",
            id="answers-for-another-experiment",
        ),
        pytest.param({1001: [raw_experiment(status="draft")]}, None, "as draft, not active", id="not-active-draft"),
        pytest.param({1001: [raw_experiment(status="success")]}, None, "already success", id="already-concluded"),
        pytest.param(
            {1001: [raw_experiment(deleted="2026-11-20T10:00:00Z")]}, None, "as deleted", id="deleted-upstream"
        ),
        pytest.param(
            {1001: [raw_experiment()]},
            MixpanelAuthError("Mixpanel did not accept the service account (HTTP 401).", http_status=401),
            "did not accept the service account",
            id="auth-on-read",
        ),
        pytest.param(
            {1001: [raw_experiment()]},
            MixpanelBadResponse("Mixpanel answered HTTP 200 with a body that is not JSON.", http_status=200),
            "not JSON",
            id="malformed-read",
        ),
        pytest.param({1001: [raw_experiment()]}, KeyError("surprise"), "unexpected error (KeyError)", id="bug-on-read"),
    ],
)
def test_read_first_refuses_without_a_put(workspace, pm, upstream, get, expected):
    fake = FakeMixpanel(upstream, get=get)

    outcome = conclude(workspace, pm, fake)

    attempt = assert_outcome(
        outcome, state=AttemptState.FAILED, entries=[REQUESTED, FAILED], claimed=False, puts=0, fake=fake
    )
    assert expected in outcome.message
    assert outcome.message.startswith("Nothing was sent")
    assert last_payload(attempt)["sent"] is False


@pytest.mark.django_db
def test_end_date_before_the_start_is_refused_without_a_put(workspace, pm):
    fake = FakeMixpanel()
    outcome = conclude(workspace, pm, fake, end_date=dt.datetime(2026, 10, 1, tzinfo=dt.UTC))
    assert_outcome(outcome, state=AttemptState.FAILED, entries=[REQUESTED, FAILED], claimed=False, puts=0, fake=fake)
    assert "before the experiment started" in outcome.message


@pytest.mark.django_db
@pytest.mark.parametrize("returned", ["active", "draft"])
def test_200_that_did_not_conclude_is_not_applied(workspace, pm, returned):
    fake = FakeMixpanel(put=f"answer:{returned}")

    outcome = conclude(workspace, pm, fake)

    attempt = assert_outcome(
        outcome, state=AttemptState.FAILED, entries=[REQUESTED, FAILED], claimed=False, puts=1, fake=fake
    )
    assert "Mixpanel answered but did not conclude" in outcome.message
    assert f"still {returned}" in outcome.message
    assert attempt.http_status == 200
    done = last_payload(attempt)
    assert done["claim_released"] is True
    assert done["response"]["summary"]["status"] == returned


# --- unknown outcomes: claim kept until reconciled -----------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    "error",
    [
        pytest.param(
            MixpanelOutcomeUnknown(
                "We do not know whether Mixpanel applied the change: Mixpanel did not answer in time."
            ),
            id="timeout",
        ),
        pytest.param(
            MixpanelOutcomeUnknown(
                "We do not know whether Mixpanel applied the change: The connection to Mixpanel broke."
            ),
            id="reset",
        ),
        pytest.param(
            MixpanelOutcomeUnknown(
                "We do not know whether Mixpanel applied the change: Mixpanel answered HTTP 200 with a body "
                "that is not JSON.",
                http_status=200,
                body_excerpt="<html>proxy</html>",
            ),
            id="malformed-body",
        ),
        pytest.param(
            MixpanelOutcomeUnknown(
                "We do not know whether Mixpanel applied the change: Mixpanel had a server error (HTTP 502).",
                http_status=502,
            ),
            id="5xx-after-send",
        ),
    ],
)
def test_sent_without_trustworthy_answer_is_unknown_and_keeps_the_claim(workspace, pm, error):
    fake = FakeMixpanel(put=error)

    outcome = conclude(workspace, pm, fake)

    attempt = assert_outcome(
        outcome, state=AttemptState.UNKNOWN, entries=[REQUESTED, UNKNOWN], claimed=True, puts=1, fake=fake
    )
    assert "Do not retry" in outcome.message
    assert "reconciled" in outcome.message
    assert outcome.experiment is None
    assert outcome.state != AttemptState.FAILED
    assert attempt.http_status == error.http_status
    done = last_payload(attempt)
    assert done["error"]["message"] == error.message
    assert done["before"]["status"] == "active"
    assert done["claim_released"] is False


@pytest.mark.django_db
def test_applied_then_no_answer_is_unknown_then_reconciled_as_applied(workspace, pm):
    fake = FakeMixpanel(put=("apply", MixpanelOutcomeUnknown("We do not know: timeout.")))

    outcome = conclude(workspace, pm, fake)

    attempt = assert_outcome(
        outcome, state=AttemptState.UNKNOWN, entries=[REQUESTED, UNKNOWN], claimed=True, puts=1, fake=fake
    )
    assert fake.status_of() == "concluded"

    with past_the_in_flight_limit():
        result = reconcile_services.conclusion_reconcile(attempt=attempt, client=fake)

    assert result.outcome == "applied"
    attempt.refresh_from_db()
    assert attempt.state == AttemptState.RECONCILED_APPLIED
    assert kinds(attempt) == [REQUESTED, UNKNOWN, RECONCILED]
    assert claim_holder() == attempt.pk
    assert len(fake.puts) == 1
    assert last_payload(attempt)["end_date_matches_request"] is True
    assert_chain_valid()


@pytest.mark.django_db
def test_unexpected_client_error_is_unknown_and_never_logs_the_secret(workspace, pm, caplog):
    fake = FakeMixpanel(put=RuntimeError(f"boom Authorization: Basic {CANARY}"))

    with caplog.at_level(logging.ERROR, logger="experiments.services"):
        outcome = conclude(workspace, pm, fake)

    attempt = assert_outcome(
        outcome, state=AttemptState.UNKNOWN, entries=[REQUESTED, UNKNOWN], claimed=True, puts=1, fake=fake
    )
    assert "unexpected error (RuntimeError)" in outcome.message
    assert "RuntimeError" in caplog.text
    assert CANARY not in caplog.text
    assert CANARY not in attempt.failure_reason
    assert all(CANARY not in e.payload for e in AuditEntry.objects.all())


@pytest.mark.django_db
def test_outcome_that_cannot_be_saved_leaves_the_attempt_for_reconcile(workspace, pm):
    def attempts_table_went_away(execute, sql, params, many, context):
        # The outcome's first write is the attempt's update: fail it as a lost database would.
        if sql.startswith("UPDATE") and ConclusionAttempt._meta.db_table in sql:
            raise DatabaseError("database went away")
        return execute(sql, params, many, context)

    fake = FakeMixpanel()
    with connection.execute_wrapper(attempts_table_went_away):
        outcome = conclude(workspace, pm, fake)

    assert not outcome.ok
    assert "could not be saved" in outcome.message
    attempt = ConclusionAttempt.objects.get(pk=outcome.attempt.pk)
    assert attempt.state == AttemptState.REQUESTED
    assert kinds(attempt) == [REQUESTED]  # the intent survived
    assert claim_holder() == attempt.pk

    with past_the_in_flight_limit():
        result = reconcile_services.conclusion_reconcile(attempt=attempt, client=fake)
    assert result.outcome == "applied"
    assert len(fake.puts) == 1


# --- the claim: one at a time -----------------------------------------------------------


@pytest.mark.django_db
def test_second_click_after_success_is_blocked_without_a_put(workspace, pm, ws_admin):
    first = conclude(workspace, pm, FakeMixpanel())
    assert first.ok
    fake = FakeMixpanel()

    second = conclude(workspace, ws_admin, fake)

    assert second.state == STATE_BLOCKED
    assert not second.ok
    # Its read may have left alongside the claim (its answer is dropped); a PUT never.
    assert fake.puts == []
    assert second.blocked_by.pk == first.attempt.pk
    assert second.message.startswith("Not sent: “Checkout button colour” was already concluded by Pat (pat) at ")
    # The refused click is on the record too: its own attempt, requested + failed, no claim.
    blocked = ConclusionAttempt.objects.get(pk=second.attempt.pk)
    assert blocked.state == AttemptState.FAILED
    assert blocked.failure_reason.startswith("Blocked: ")
    assert blocked.actor_name == "Ada (ada)"
    assert kinds(blocked) == [REQUESTED, FAILED]
    payload = last_payload(blocked)
    assert payload["sent"] is False
    assert payload["blocked_by_attempt"] == first.attempt.pk
    assert claim_holder() == first.attempt.pk
    assert_chain_valid()


@pytest.mark.django_db
def test_click_while_another_is_in_flight_says_who_and_since_when(workspace, pm, ws_admin):
    def put(fake, ws, exp_id, end_date):
        # While the first PUT is "on the wire", a colleague presses the button.
        inner = FakeMixpanel()
        blocked = conclude(workspace, ws_admin, inner)
        fake.seen = (blocked, inner.calls)
        return fake.applied(ws, exp_id, end_date)

    fake = FakeMixpanel(put=put)
    first = conclude(workspace, pm, fake)

    blocked, inner_calls = fake.seen
    assert first.ok
    assert [c for c in inner_calls if c[0] == "put"] == []
    assert blocked.state == STATE_BLOCKED
    assert "is already being concluded by Pat (pat) since" in blocked.message
    assert blocked.blocked_by.pk == first.attempt.pk
    assert len(fake.puts) == 1


@pytest.mark.django_db
def test_after_a_definite_failure_a_new_attempt_may_succeed(workspace, pm):
    refused = conclude(workspace, pm, FakeMixpanel(put=MixpanelRateLimited(http_status=429)))
    assert refused.state == AttemptState.FAILED

    again = conclude(workspace, pm, FakeMixpanel())

    assert again.ok
    assert again.attempt.pk != refused.attempt.pk
    assert kinds(refused.attempt) == [REQUESTED, FAILED]
    assert kinds(again.attempt) == [REQUESTED, SUCCEEDED]
    assert claim_holder() == again.attempt.pk
    assert_chain_valid()


@pytest.mark.django_db
def test_unknown_outcome_blocks_the_next_click(workspace, pm):
    unknown = conclude(workspace, pm, FakeMixpanel(put=MixpanelOutcomeUnknown()))
    fake = FakeMixpanel()

    again = conclude(workspace, pm, fake)

    assert again.state == STATE_BLOCKED
    assert "already being concluded by Pat (pat)" in again.message
    assert again.blocked_by.pk == unknown.attempt.pk
    assert fake.puts == []


# --- refused before any attempt ---------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("who", "overrides", "message"),
    [
        ("teammate", {}, conclusion_services.MSG_FORBIDDEN),
        ("outsider", {}, conclusion_services.MSG_FORBIDDEN),
        ("pm", {"reason_category": "because"}, conclusion_services.MSG_BAD_REASON),
        ("pm", {"end_date": timezone.now() + dt.timedelta(days=1)}, dates.MSG_END_IN_FUTURE),
        ("pm", {"experiment_id": "  "}, conclusion_services.MSG_NO_EXPERIMENT),
        ("pm", {"experiment_id": "x" * 101}, conclusion_services.MSG_NO_EXPERIMENT),
    ],
)
def test_refused_before_anything_is_recorded_or_sent(request, workspace, who, overrides, message):
    user = request.getfixturevalue(who)
    fake = FakeMixpanel()

    outcome = conclude(workspace, user, fake, **overrides)

    assert outcome.attempt is None
    assert outcome.state == AttemptState.FAILED
    assert outcome.message == message
    assert fake.calls == []
    assert AuditEntry.objects.count() == 0
    assert ConclusionAttempt.objects.count() == 0


@pytest.mark.django_db
def test_admin_may_conclude_too(workspace, ws_admin):
    outcome = conclude(workspace, ws_admin, FakeMixpanel())
    assert outcome.ok


@pytest.mark.django_db
def test_long_upstream_name_is_kept_as_far_as_it_fits(workspace, pm):
    outcome = conclude(workspace, pm, FakeMixpanel(), experiment_name="n" * 700)
    assert outcome.ok
    assert outcome.attempt.experiment_name == "n" * 500
    assert AuditEntry.objects.filter(attempt=outcome.attempt).first().experiment_name == "n" * 500
