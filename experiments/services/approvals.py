"""Two-person approval of a force conclude: approving a waiting request (which sends the
PUT, once) and rejecting it. Asking is a press of Force conclude in a workspace that
requires approval, and a request nobody decided on lapses (services.conclusions).

An approval is the request's claim and intent carried forward: the attempt already
holds the experiment's claim, so approving only moves it from "awaiting_approval" to
"requested" (compare-and-set, with its audit entry and its reconcile task, in one
transaction) and then runs the same read, PUT and outcome as a press. Two approvers
pressing at once, or an approval racing the expiry, move it once: only the winner sends.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from experiments import audit_payloads, auditlog, tasks
from experiments.dates import format_utc
from experiments.mixpanel import client as mixpanel
from experiments.models import AttemptState, ConclusionAttempt, ConclusionClaim
from experiments.selectors import workspaces as workspace_selectors
from experiments.services import attempts
from experiments.services import conclusions as conclusion_services
from experiments.services.conclusions import ConclusionOutcome, quoted_name

APPROVE = "approve"
REJECT = "reject"
NOTE_MAX_LENGTH = 2000

MSG_FORBIDDEN = "Only concluders and admins of this workspace can approve or reject requests to end an analysis."
MSG_SELF_APPROVAL = (
    "You asked for this yourself, so you cannot approve it: another concluder or admin of this workspace must. "
    "Nothing was sent."
)
MSG_NOTE_REQUIRED = "Say why you reject it in the note: {who} reads it."
MSG_NOTE_TOO_LONG = f"Keep the note under {NOTE_MAX_LENGTH} characters."
MSG_REQUESTER_CANNOT = (
    "{who} may no longer end analyses in this workspace, so their request cannot be approved. Reject it instead."
)
MSG_EXPIRED_NOW = (
    "This request expired at {when} before anyone approved it. Nothing was sent; ask again if still needed."
)
MSG_ALREADY = {
    AttemptState.REJECTED: "This request was already rejected by {reviewer}. Nothing was sent.",
    AttemptState.EXPIRED: "This request had already expired. Nothing was sent.",
}
MSG_ALREADY_APPROVED = "{reviewer} already approved this request; it was sent once, by that approval."
MSG_REJECTED = "Rejected: the analysis of {name} will not be ended. {who} sees your note."
MSG_WITHDRAWN = "Withdrawn: your request to end the analysis of {name} is closed. Nothing was sent."


def conclusion_review(
    *, attempt: ConclusionAttempt, user: Any, decision: str, note: str, client: mixpanel.MixpanelClient | None
) -> ConclusionOutcome:
    """Approve (`decision` "approve": sends the PUT, once) or reject a waiting request.

    Refusals (not a concluder, one's own request, a rejection without a note, a
    request no longer waiting) come back as outcomes with a readable message and
    change nothing. `client` is only used by an approval.
    """
    note = (note or "").strip()
    refusal = _review_problem(attempt, user, decision, note)
    if refusal:
        return ConclusionOutcome(attempt, attempt.state, ok=False, message=refusal)
    if decision == REJECT:
        return _reject(attempt, user, note)
    if not _mark_approved(attempt, user, note):
        return ConclusionOutcome(attempt, attempt.state, ok=False, message=_no_longer_waiting(attempt))
    return conclusion_services.conclusion_send(attempt, client=client)


def _review_problem(attempt: ConclusionAttempt, user: Any, decision: str, note: str) -> str | None:
    access = workspace_selectors.workspace_access(user=user, workspace_pk=attempt.workspace_id)
    own = attempt.actor_id == user.pk
    if decision not in (APPROVE, REJECT) or ((access is None or not access.can_conclude) and not own):
        return MSG_FORBIDDEN
    if len(note) > NOTE_MAX_LENGTH:
        return MSG_NOTE_TOO_LONG
    if attempt.state != AttemptState.AWAITING_APPROVAL:
        return _no_longer_waiting(attempt)
    if conclusion_services.request_overdue(attempt):
        conclusion_services.approval_lapse(attempt)
        return MSG_EXPIRED_NOW.format(when=format_utc(attempt.expires_at))
    if decision == APPROVE and own:
        return MSG_SELF_APPROVAL
    if decision == REJECT and not own and not note:
        return MSG_NOTE_REQUIRED.format(who=attempt.actor_name)
    if decision == APPROVE:
        requester = workspace_selectors.workspace_access(user=attempt.actor, workspace_pk=attempt.workspace_id)
        if requester is None or not requester.can_conclude or not attempt.actor.is_active:
            return MSG_REQUESTER_CANNOT.format(who=attempt.actor_name)
    return None


def _no_longer_waiting(attempt: ConclusionAttempt) -> str:
    if attempt.state == AttemptState.AWAITING_APPROVAL:  # lost a race with the expiry
        return MSG_EXPIRED_NOW.format(when=format_utc(attempt.expires_at))
    if attempt.state in MSG_ALREADY:
        return MSG_ALREADY[attempt.state].format(reviewer=attempt.reviewer_name or "someone")
    return MSG_ALREADY_APPROVED.format(reviewer=attempt.reviewer_name or "Someone")


def _review_columns(user: Any, note: str) -> dict[str, Any]:
    return {"reviewer": user, "reviewer_name": auditlog.display_name(user), "review_note": note}


def _mark_approved(attempt: ConclusionAttempt, user: Any, note: str) -> bool:
    """Move the waiting request to "requested", with its entry and its reconcile task, in
    one transaction; False when it was no longer waiting (another approver, a rejection
    or the expiry came first). Only the caller that gets True may send."""
    now = timezone.now()
    columns = {**_review_columns(user, note), "state": AttemptState.REQUESTED, "reviewed_at": now}
    with transaction.atomic():
        waiting = ConclusionAttempt.objects.filter(
            pk=attempt.pk, state=AttemptState.AWAITING_APPROVAL, expires_at__gt=now
        )
        if not waiting.update(**columns):
            attempt.refresh_from_db()
            return False
        for field_name, value in columns.items():
            setattr(attempt, field_name, value)
        payload = audit_payloads.reviewed(attempt, closed=False, claim_released=False)
        kind = audit_payloads.entry_kind(attempt.action, "approved")
        attempts.attempt_append_entry(attempt, kind, payload, actor=user, actor_name=columns["reviewer_name"])
        # From here on it is an attempt like any press: if this process dies before the
        # outcome, the worker reads the experiment once the PUT cannot be in flight.
        tasks.reconcile_attempt_when_judgeable(attempt=attempt)
    return True


def _reject(attempt: ConclusionAttempt, user: Any, note: str) -> ConclusionOutcome:
    """Close the waiting request unsent, releasing its claim; its requester may withdraw it."""
    now = timezone.now()
    own = attempt.actor_id == user.pk
    name = quoted_name(attempt.experiment_name, attempt.experiment_id)
    reviewer = _review_columns(user, note)
    reason = "Withdrawn by the requester" if own else f"Rejected by {reviewer['reviewer_name']}"
    columns = {
        **reviewer,
        "state": AttemptState.REJECTED,
        "reviewed_at": now,
        "finished_at": now,
        "failure_reason": f"{reason}{': ' + note if note else ''}. Nothing was sent.",
    }
    with transaction.atomic():
        if not ConclusionAttempt.objects.filter(pk=attempt.pk, state=AttemptState.AWAITING_APPROVAL).update(**columns):
            attempt.refresh_from_db()
            return ConclusionOutcome(attempt, attempt.state, ok=False, message=_no_longer_waiting(attempt))
        for field_name, value in columns.items():
            setattr(attempt, field_name, value)
        ConclusionClaim.objects.filter(attempt=attempt).delete()
        payload = audit_payloads.reviewed(attempt, closed=True, claim_released=True)
        kind = audit_payloads.entry_kind(attempt.action, AttemptState.REJECTED)
        attempts.attempt_append_entry(attempt, kind, payload, actor=user, actor_name=reviewer["reviewer_name"])
    message = (MSG_WITHDRAWN if own else MSG_REJECTED).format(name=name, who=attempt.actor_name)
    return ConclusionOutcome(attempt, AttemptState.REJECTED, ok=False, message=message)
