"""Writes for force conclude: the one upstream PUT with its audit trail, and reconciling open attempts."""

from __future__ import annotations

import datetime as dt
import logging
import time
import traceback
from dataclasses import dataclass
from typing import Any

from django.db import DatabaseError, transaction
from django.utils import timezone

from experiments import audit_payloads, auditlog
from experiments.dates import end_date_problem, format_utc
from experiments.mixpanel import client as mixpanel
from experiments.mixpanel.errors import MixpanelError, MixpanelNotFound
from experiments.mixpanel.experiment import ConcludeResult, Experiment, format_end_date
from experiments.models import (
    AttemptState,
    ConclusionAttempt,
    ConclusionClaim,
    ReasonCategory,
    Workspace,
)
from experiments.selectors import experiment_list as list_selectors
from experiments.selectors import workspaces as workspace_selectors
from experiments.services import attempts

logger = logging.getLogger(__name__)

# Record intent, act, record outcome. experiment_force_conclude reads top to bottom:
#   1. one transaction inserts the attempt, its claim and the "requested" entry, and
#      commits; a press that loses the claim is recorded as refused and sends nothing;
#   2. a read of the experiment under this workspace proves it is the one confirmed,
#      and still active;
#   3. the PUT, once, never retried;
#   4. one transaction records the outcome, only while the attempt is still open.
# No transaction or lock is held while we wait on Mixpanel. A definite failure releases
# the claim (a person may try again as a new attempt); an unknown outcome keeps it
# until conclusion_reconcile reads the experiment.

# Readable answers, as constants so tests and views can match them.
MSG_FORBIDDEN = (
    "You may not force conclude experiments in this workspace. Ask a workspace admin for the concluder role."
)
MSG_BAD_REASON = "Choose a reason from the list."
MSG_NO_EXPERIMENT = "That is not a valid experiment id."
MSG_BLOCKED_IN_FLIGHT = (
    "Not sent: {name} is already being concluded by {who} since {when}. "
    "Wait for that attempt to finish; its outcome will show here."
)
# How a refused press's failure reason starts, so the audit list tells it from a failed PUT.
MSG_BLOCKED_PREFIX = "Blocked: "
MSG_BLOCKED_DONE = "Not sent: {name} was already concluded by {who} at {when}."
MSG_BLOCKED_RACE = (
    "Not sent: another attempt on {name} finished a moment ago. Refresh to see its outcome before trying again."
)
MSG_READ_FAILED = "Nothing was sent: the experiment could not be read from Mixpanel first. {error}"
MSG_NOT_FOUND = (
    "Nothing was sent: Mixpanel has no experiment {experiment_id} in this workspace "
    "(it may have been deleted, or belong to another workspace)."
)
MSG_WRONG_EXPERIMENT = (
    "Nothing was sent: Mixpanel answered for a different experiment than the one asked for. Check the experiment id."
)
MSG_DELETED = "Nothing was sent: Mixpanel shows {name} as deleted."
MSG_NOT_ACTIVE = "Nothing was sent: Mixpanel shows {name} as {status}, not active, so there is nothing to conclude."
MSG_ALREADY_CONCLUDED = (
    "Nothing was sent: Mixpanel shows {name} as already {status}. It was concluded outside this dashboard "
    "or by an earlier attempt; see the audit trail."
)
MSG_BAD_END_DATE = "Nothing was sent. {problem}"
MSG_SUCCEEDED = (
    "Concluded: {name} is now {status} in Mixpanel, its analysis ending {end}. "
    "No decision was recorded and no feature flag was changed."
)
MSG_PUT_FAILED = "Mixpanel did not conclude {name}; nothing was changed. {error}"
MSG_NOT_APPLIED = (
    "Mixpanel answered but did not conclude {name}: it is still {status}. Nothing was changed; "
    "check the experiment in Mixpanel before trying again."
)
MSG_UNKNOWN = (
    "The request to conclude {name} was sent, but no trustworthy answer came back, so we do not know yet "
    "whether Mixpanel applied it. Do not retry: this attempt stays open until it is reconciled by reading "
    "the experiment from Mixpanel. What happened: {error}"
)
MSG_ANSWERED_OTHER = "Mixpanel answered with a different experiment than the one concluded."
MSG_UNEXPECTED = audit_payloads.MSG_UNEXPECTED
MSG_NOT_RECORDED = (
    "The outcome of this request on {name} could not be saved here. This attempt stays open and will be "
    "reconciled by reading the experiment from Mixpanel; do not retry."
)
MSG_LATE = "Mixpanel's answer for {name} came after the attempt was reconciled ({state}); it was kept as evidence."

MSG_AWAITING = (
    "Asked for approval: ending the analysis of {name} now waits for another concluder or admin of this "
    "workspace to approve it (until {when}). Nothing has been sent to Mixpanel yet."
)
MSG_BLOCKED_AWAITING = (
    "Not sent: {who} asked at {when} to end the analysis of {name}, and that request waits for approval. "
    "Approve or reject it instead."
)
MSG_EXPIRED = "Expired: nobody approved ending the analysis of {name} within {hours} h, so nothing was sent."
# Who closes an expired request in the audit trail (no person does).
EXPIRY_NAME = "approval expiry"

STATE_BLOCKED = "blocked"


@dataclass(frozen=True)
class ConclusionOutcome:
    """What one press of "Force conclude" came to, for the view to render.

    `experiment` is the experiment as last seen: the returned one after a PUT
    that answered, the "before" read after a definite failure that followed
    the read, None when we never read it or cannot trust what we know.
    """

    attempt: ConclusionAttempt | None  # None when refused before any attempt was recorded
    state: str  # an AttemptState value, or "blocked" when another attempt holds the claim
    ok: bool  # True only for a success
    message: str  # readable for a PM: what happened and what to do next
    experiment: Experiment | None = None
    blocked_by: ConclusionAttempt | None = None

    @property
    def claim_holder(self) -> ConclusionAttempt | None:
        """The attempt holding the experiment's claim once this press is over."""
        if self.state == STATE_BLOCKED:
            return self.blocked_by
        if self.attempt is not None and self.state in (
            AttemptState.AWAITING_APPROVAL,
            AttemptState.REQUESTED,
            AttemptState.SUCCEEDED,
            AttemptState.UNKNOWN,
            AttemptState.RECONCILED_APPLIED,
        ):
            return self.attempt
        return None


def quoted_name(name: str, experiment_id: str) -> str:
    return f"“{name}”" if name else f"experiment {experiment_id}"


def _refused(message: str) -> ConclusionOutcome:
    return ConclusionOutcome(attempt=None, state=AttemptState.FAILED, ok=False, message=message)


def experiment_force_conclude(
    *,
    workspace: Workspace,
    user: Any,
    experiment_id: str,
    experiment_name: str,
    reason_category: str,
    reason_text: str,
    end_date: dt.datetime,
    client: mixpanel.MixpanelClient,
) -> ConclusionOutcome:
    """Force conclude one experiment in Mixpanel, at most once, and audit every step.

    `experiment_id` must be exactly the id Mixpanel gave (it is never cleaned up
    here: a near-twin id is another experiment). Never raises for anything
    Mixpanel does: every upstream failure comes back as an outcome with a
    readable message. The user's role is checked here too, because this call
    changes the world. In a workspace that requires two-person approval the press
    sends nothing: it records a request (state "awaiting_approval", holding the
    claim) that services.approvals approves, which sends, or rejects.
    """
    refusal = _request_problem(workspace, user, experiment_id, reason_category, end_date)
    if refusal:
        return _refused(refusal)
    request = _request(workspace, user, experiment_id, experiment_name, reason_category, reason_text, end_date)
    name = quoted_name(request["experiment_name"], experiment_id)
    if workspace.requires_approval:
        # Two-person approval: this press only asks; an approval (services.approvals) sends.
        request.update(state=AttemptState.AWAITING_APPROVAL, expires_at=approval_expiry(workspace, request))

    # 1. Claim and intent (or the request for approval), committed before anything is sent.
    attempt, holder = attempts.attempt_claim(request=request)
    if attempt is None and holder is not None and request_overdue(holder.attempt):
        # The claim is held by a request nobody approved in time: close it, then claim.
        approval_lapse(holder.attempt)
        attempt, holder = attempts.attempt_claim(request=request)
    if attempt is None:
        return record_blocked(request, holder=holder, message=_blocked_message(holder, name))
    if attempt.state == AttemptState.AWAITING_APPROVAL:
        when = format_utc(attempt.expires_at)
        return ConclusionOutcome(attempt, attempt.state, ok=False, message=MSG_AWAITING.format(name=name, when=when))
    return conclusion_send(attempt, client=client)


def conclusion_send(attempt: ConclusionAttempt, *, client: mixpanel.MixpanelClient) -> ConclusionOutcome:
    """Steps 2 to 4 for an attempt whose claim and intent are committed ("requested"):
    read, PUT once, record the outcome. A press runs them at once; an approval, once the
    second person has approved."""
    workspace, experiment_id, end_date = attempt.workspace, attempt.experiment_id, attempt.end_date
    name = quoted_name(attempt.experiment_name, experiment_id)

    # 2. The read: proves the experiment is this one, in this workspace, and active.
    try:
        before = client.get_experiment(workspace.mixpanel_workspace_id, experiment_id)
    except Exception as exc:
        return finish_attempt(attempt, AttemptState.FAILED, read_failure(exc, attempt), release_claim=True, error=exc)
    problem = _not_concludable(before, attempt, name)
    if problem:
        return finish_attempt(attempt, AttemptState.FAILED, problem, release_claim=True, before=before)

    # 3. The PUT, once. Whatever it raises is recorded; nothing is retried.
    started = time.monotonic()
    try:
        result = client.force_conclude(workspace.mixpanel_workspace_id, experiment_id, end_date=end_date)
    except Exception as exc:
        return write_failed(attempt, exc, before=before, started=started, failed=MSG_PUT_FAILED, unknown=MSG_UNKNOWN)

    # 4. An answer came: record what it says.
    outcome = _put_answered(attempt, result, name=name, before=before, started=started)
    if outcome.ok:
        invalidate_list(workspace)
    return outcome


def approval_expiry(workspace: Workspace, request: dict[str, Any]) -> dt.datetime:
    """When a request for approval made now lapses: the workspace's window after it was made."""
    return request["created_at"] + dt.timedelta(hours=workspace.approval_window_hours)


def request_overdue(attempt: ConclusionAttempt) -> bool:
    """A request for approval whose window has passed (whether or not it was closed yet)."""
    return (
        attempt.state == AttemptState.AWAITING_APPROVAL
        and attempt.expires_at is not None
        and attempt.expires_at <= timezone.now()
    )


def approval_lapse(attempt: ConclusionAttempt) -> bool:
    """Close a request for approval whose window has passed: "expired", its claim released,
    an approval_expired entry; nothing is ever sent. Compare-and-set, so the worker's
    task, the cron job and a press that finds it overdue close it once; True when this
    call did. Safe to call early: a request still within its window is left alone."""
    now = timezone.now()
    name = quoted_name(attempt.experiment_name, attempt.experiment_id)
    columns = {
        "state": AttemptState.EXPIRED,
        "failure_reason": MSG_EXPIRED.format(name=name, hours=attempt.workspace.approval_window_hours),
        "finished_at": now,
    }
    with transaction.atomic():
        waiting = ConclusionAttempt.objects.filter(pk=attempt.pk, state=AttemptState.AWAITING_APPROVAL)
        if not waiting.filter(expires_at__lte=now).update(**columns):
            attempt.refresh_from_db()
            return False
        for field_name, value in columns.items():
            setattr(attempt, field_name, value)
        ConclusionClaim.objects.filter(attempt=attempt).delete()
        payload = audit_payloads.reviewed(attempt, closed=True, claim_released=True)
        kind = audit_payloads.entry_kind(attempt.action, AttemptState.EXPIRED)
        attempts.attempt_append_entry(attempt, kind, payload, actor=None, actor_name=EXPIRY_NAME)
    return True


def write_failed(
    attempt: ConclusionAttempt,
    exc: BaseException,
    *,
    before: Experiment,
    started: float,
    failed: str,
    unknown: str,
) -> ConclusionOutcome:
    """Record a PUT or PATCH that raised. The client's exception family says whether Mixpanel
    may have applied it (outcome_unknown); anything else we did not expect may have, too.
    `failed` and `unknown` are the action's messages, formatted with the error."""
    name = quoted_name(attempt.experiment_name, attempt.experiment_id)
    timing = {"duration_ms": ms_since(started), "http_status": getattr(exc, "http_status", None)}
    if isinstance(exc, MixpanelError) and not exc.outcome_unknown:
        message = failed.format(name=name, error=exc.message)
        sent = exc.http_status is not None
        evidence = {"before": before, "error": exc, "sent": sent, **timing}
        return finish_attempt(attempt, AttemptState.FAILED, message, True, **evidence)
    if not isinstance(exc, MixpanelError):
        log_unexpected(exc, attempt=attempt, step=attempt.action)
    message = unknown.format(name=name, error=audit_payloads.error_data(exc)["message"])
    return finish_attempt(attempt, AttemptState.UNKNOWN, message, False, before=before, error=exc, sent=True, **timing)


def answer_evidence(result: ConcludeResult, *, before: Experiment, started: float) -> dict[str, Any]:
    """What a PUT or PATCH that answered leaves in the trail: the experiment before, and the answer as received."""
    return {
        "before": before,
        "sent": True,
        "http_status": result.http_status,
        "duration_ms": ms_since(started),
        "response": audit_payloads.answer(
            http_status=result.http_status,
            body=result.raw_body or auditlog.canonical_json(dict(result.experiment.raw)),
            truncated=bool(result.truncated),
            returned=result.experiment,
        ),
    }


def _put_answered(
    attempt: ConclusionAttempt,
    result: ConcludeResult,
    *,
    name: str,
    before: Experiment,
    started: float,
) -> ConclusionOutcome:
    """Record a PUT that answered. It counts as applied only if the experiment it returns
    is this one and is now concluded, success or fail."""
    returned = result.experiment
    evidence = answer_evidence(result, before=before, started=started)
    if returned.id != attempt.experiment_id:
        message = MSG_UNKNOWN.format(name=name, error=MSG_ANSWERED_OTHER)
        return finish_attempt(attempt, AttemptState.UNKNOWN, message, release_claim=False, **evidence)
    if not returned.is_concluded:
        message = MSG_NOT_APPLIED.format(name=name, status=returned.status)
        return finish_attempt(attempt, AttemptState.FAILED, message, release_claim=True, shown=returned, **evidence)
    end = format_utc(returned.end_date or attempt.end_date)
    message = MSG_SUCCEEDED.format(name=name, status=returned.status, end=end)
    return finish_attempt(attempt, AttemptState.SUCCEEDED, message, release_claim=False, shown=returned, **evidence)


def _request(
    workspace: Workspace,
    user: Any,
    experiment_id: str,
    experiment_name: str,
    reason_category: str,
    reason_text: str,
    end_date: dt.datetime,
) -> dict[str, Any]:
    """The new attempt's fields, as the person asked."""
    # Names are free text from Mixpanel: keep what fits rather than fail on a long one.
    max_name = ConclusionAttempt._meta.get_field("experiment_name").max_length
    return {
        "created_at": timezone.now(),
        "workspace": workspace,
        "actor": user,
        "actor_name": auditlog.display_name(user),
        "experiment_id": experiment_id,
        "experiment_name": (experiment_name or "")[:max_name],
        "reason_category": reason_category,
        "reason_text": reason_text,
        "end_date": end_date,
        "request_body": {"end_date": format_end_date(end_date)},
    }


def _request_problem(
    workspace: Workspace, user: Any, experiment_id: str, reason_category: str, end_date: dt.datetime
) -> str | None:
    """Why this request is refused before anything is recorded, or None."""
    access = workspace_selectors.workspace_access(user=user, workspace_pk=workspace.pk)
    if access is None or not access.can_conclude:
        return MSG_FORBIDDEN
    max_length = ConclusionAttempt._meta.get_field("experiment_id").max_length
    if not experiment_id.strip() or len(experiment_id) > max_length:
        return MSG_NO_EXPERIMENT
    if reason_category not in ReasonCategory.values:
        return MSG_BAD_REASON
    if timezone.is_naive(end_date):
        return MSG_BAD_END_DATE.format(problem="the end date has no time zone.")
    return end_date_problem(end_date, start=None, now=timezone.now())


def _blocked_message(holder: ConclusionClaim | None, name: str) -> str:
    if holder is None:
        return MSG_BLOCKED_RACE.format(name=name)
    held = holder.attempt
    if held.state in (AttemptState.SUCCEEDED, AttemptState.RECONCILED_APPLIED):
        return MSG_BLOCKED_DONE.format(name=name, who=held.actor_name, when=format_utc(held.finished_at))
    if held.state == AttemptState.AWAITING_APPROVAL:
        return MSG_BLOCKED_AWAITING.format(name=name, who=held.actor_name, when=format_utc(held.created_at))
    return MSG_BLOCKED_IN_FLIGHT.format(name=name, who=held.actor_name, when=format_utc(held.created_at))


def record_blocked(request: dict[str, Any], *, holder: ConclusionClaim | None, message: str) -> ConclusionOutcome:
    """A refused press is an attempt too: it gets its own requested and failed entries
    (never a claim), so the trail shows every press, including the losing half of a
    double click. Nothing is sent upstream."""
    blocked_by = holder.attempt if holder else None
    # A refused press asked for nothing, not even an approval: it is recorded as a press.
    request = {**request, "state": AttemptState.REQUESTED, "expires_at": None}
    with transaction.atomic():
        attempt = attempts.attempt_record_intent(request=request)
        attempts.attempt_record_outcome(
            attempt=attempt,
            state=AttemptState.FAILED,
            message=MSG_BLOCKED_PREFIX + message,
            release_claim=False,
            evidence={"sent": False, "blocked_by": blocked_by.pk if blocked_by else None},
        )
    return ConclusionOutcome(attempt, STATE_BLOCKED, ok=False, message=message, blocked_by=blocked_by)


def read_failure(exc: BaseException, attempt: ConclusionAttempt) -> str:
    """The message for a read that failed. A read changes nothing, so any failure is definite."""
    if isinstance(exc, MixpanelNotFound):
        return MSG_NOT_FOUND.format(experiment_id=attempt.experiment_id)
    if not isinstance(exc, MixpanelError):
        log_unexpected(exc, attempt=attempt, step="read")
    return MSG_READ_FAILED.format(error=audit_payloads.error_data(exc)["message"])


def _not_concludable(before: Experiment, attempt: ConclusionAttempt, name: str) -> str | None:
    """Why the experiment as read may not be concluded by this attempt, or None."""
    if before.id != attempt.experiment_id:
        return MSG_WRONG_EXPERIMENT
    if before.deleted is not None:
        return MSG_DELETED.format(name=name)
    if before.is_concluded:
        return MSG_ALREADY_CONCLUDED.format(name=name, status=before.status)
    if not before.is_active:
        return MSG_NOT_ACTIVE.format(name=name, status=before.status)
    problem = end_date_problem(attempt.end_date, start=before.start_date, now=attempt.created_at)
    return MSG_BAD_END_DATE.format(problem=problem) if problem else None


def finish_attempt(
    attempt: ConclusionAttempt,
    state: str,
    message: str,
    release_claim: bool,
    *,
    shown: Experiment | None = None,
    **evidence: Any,
) -> ConclusionOutcome:
    """Record the outcome and say what the press came to. If even recording fails,
    the committed "requested" entry and the kept claim leave the attempt for
    reconciling."""
    try:
        recorded = attempts.attempt_record_outcome(
            attempt=attempt, state=state, message=message, release_claim=release_claim, evidence=evidence
        )
    except DatabaseError:
        logger.exception("Could not record the %s outcome of conclusion attempt #%s", state, attempt.pk)
        try:
            attempt.refresh_from_db()
        except DatabaseError:
            attempt.state = AttemptState.REQUESTED
        message = MSG_NOT_RECORDED.format(name=quoted_name(attempt.experiment_name, attempt.experiment_id))
        return ConclusionOutcome(attempt, attempt.state, ok=False, message=message)
    if not recorded:
        message = MSG_LATE.format(name=quoted_name(attempt.experiment_name, attempt.experiment_id), state=attempt.state)
        return ConclusionOutcome(attempt, attempt.state, ok=False, message=message)
    if state == AttemptState.FAILED and shown is None:
        shown = evidence.get("before")
    return ConclusionOutcome(attempt, state, ok=state == AttemptState.SUCCEEDED, message=message, experiment=shown)


def ms_since(started: float) -> int:
    return round((time.monotonic() - started) * 1000)


def log_unexpected(exc: BaseException, *, attempt: ConclusionAttempt, step: str) -> None:
    # Frames only: the exception's own text could quote a header or a URL, and
    # secrets are never logged.
    logger.error(
        "Unexpected %s from the Mixpanel client (%s) for attempt #%s:\n%s",
        type(exc).__name__,
        step,
        attempt.pk,
        "".join(traceback.format_tb(exc.__traceback__)),
    )


def invalidate_list(workspace: Workspace) -> None:
    """Drop the workspace's cached experiment list so every process shows the new status."""
    try:
        list_selectors.invalidate_experiment_list(workspace=workspace)
    except Exception:
        # A cache hiccup must not turn a recorded success into an error page.
        logger.exception("Could not invalidate the experiment list of workspace #%s", workspace.pk)
