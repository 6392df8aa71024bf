"""Two-person approval: asking, approving (which sends the call, once), rejecting,
withdrawing, and the expiry of a request nobody decided on. The same for both actions: a
Force conclude and a decision (Record the decision).

Asking is a press that the workspace's approval policy says needs a second person
(selectors.approval_risk): the attempt is recorded as "awaiting_approval" with the
experiment's claim and the rules that made it a request, and an `expire_request` task is
queued for the end of its window. Nothing is sent.

An approval is the request's claim and intent carried forward: it only moves the attempt
from "awaiting_approval" to "requested" (with its entry and its reconcile task, in one
transaction) and then runs the same read, call and outcome as a press. Two approvers
pressing at once, or an approval racing the expiry, move it once: only the winner sends.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from django.tasks import task
from django.utils import timezone

from experiments import audit_payloads
from experiments.dates import format_utc
from experiments.mixpanel.client import MixpanelClient
from experiments.models import AttemptAction, AttemptState, ConclusionAttempt, Workspace
from experiments.observability import log_context
from experiments.selectors import people as people_selectors
from experiments.selectors import workspaces as workspace_selectors
from experiments.services.attempts import (
    FAILURE_CONFLICT,
    FAILURE_FORBIDDEN,
    FAILURE_INVALID,
    AttemptOutcome,
    acting_name,
    attempt_transition,
    quoted_name,
)
from experiments.services.reconcile import reconcile_attempt_when_judgeable
from experiments.services.sending import attempt_send

logger = logging.getLogger(__name__)

APPROVE = "approve"
REJECT = "reject"
NOTE_MAX_LENGTH = 2000
# Who closes an expired request in the audit trail (no person does).
EXPIRY_NAME = "approval expiry"

# What a request asks for, in the messages about it: "force concluding “Checkout”".
DOING = {
    AttemptAction.CONCLUSION: "force concluding {name}",
    AttemptAction.DECISION: "recording the decision on {name} ({what})",
}
# What its requester must still be allowed to do for an approval to send it.
VERB = {AttemptAction.CONCLUSION: "force conclude", AttemptAction.DECISION: "record decisions"}
UNDONE = {
    AttemptAction.CONCLUSION: "{name} will not be force concluded",
    AttemptAction.DECISION: "the decision on {name} will not be recorded",
}
MSG_AWAITING = (
    "Asked for approval: {doing} now waits for another concluder or admin of this "
    "workspace to approve it (until {when}). Nothing has been sent to Mixpanel yet."
)
MSG_AWAITING_WHY = " It needs approval because {rules}."
MSG_EXPIRED = "Expired: nobody approved {doing} within {hours} h, so nothing was sent."
MSG_FORBIDDEN = (
    "Only concluders and admins of this workspace can approve or reject requests to Force conclude "
    "or Record the decision."
)
MSG_SELF_APPROVAL = (
    "You asked for this yourself, so you cannot approve it: another concluder or admin of this workspace must. "
    "Nothing was sent."
)
MSG_SAME_PERSON = (
    "Your account and {who}'s share {what}, so they count as one person, and nobody approves their own request: "
    "another concluder or admin of this workspace must. Nothing was sent."
)
MSG_NOTE_REQUIRED = "Say why you reject it in the note: {who} reads it."
MSG_NOTE_TOO_LONG = f"Keep the note under {NOTE_MAX_LENGTH} characters."
MSG_REQUESTER_CANNOT = (
    "{who} may no longer {verb} in this workspace, so their request cannot be approved. Reject it instead."
)
MSG_EXPIRED_NOW = (
    "This request expired at {when} before anyone approved it. Nothing was sent; ask again if still needed."
)
MSG_ALREADY = {
    AttemptState.REJECTED: "This request was already rejected by {reviewer}. Nothing was sent.",
    AttemptState.EXPIRED: "This request had already expired. Nothing was sent.",
    AttemptState.WITHDRAWN: "This request was already withdrawn by {requester}. Nothing was sent.",
}
MSG_ALREADY_APPROVED = "{reviewer} already approved this request; it was sent once, by that approval."
MSG_REJECTED = "Rejected: {undone}. {who} sees your note."
MSG_WITHDRAWN = "Withdrawn: your request to {asked} is closed. Nothing was sent."
ASKED = {
    AttemptAction.CONCLUSION: "force conclude {name}",
    AttemptAction.DECISION: "record the decision on {name}",
}

# What the expiry task did, kept in its result row.
RESULT_MISSING = "missing"
RESULT_NOT_DUE = "waiting until its window ends"


# --- Asking ------------------------------------------------------------------------------


def request_doing(attempt: ConclusionAttempt) -> str:
    """What a request asks for, as its messages say it ("force concluding “Checkout”")."""
    name = quoted_name(attempt.experiment_name, attempt.experiment_id)
    return DOING[attempt.action].format(name=name, what=attempt.decision_words if attempt.is_decision else "")


def approval_request_columns(
    workspace: Workspace, request: dict[str, Any], *, rules: list[dict[str, str]]
) -> dict[str, Any]:
    """What turns a press into a request for approval: its state, when it lapses (the
    workspace's window after it was made), and the rules that made it one."""
    expires_at = request["created_at"] + dt.timedelta(hours=workspace.approval_window_hours)
    return {"state": AttemptState.AWAITING_APPROVAL, "expires_at": expires_at, "approval_rules": rules}


def approval_asked(attempt: ConclusionAttempt) -> AttemptOutcome:
    """What a press that asked for approval came to, with the rules that made it a request."""
    message = MSG_AWAITING.format(doing=request_doing(attempt), when=format_utc(attempt.expires_at))
    words = [rule.get("words", "") for rule in attempt.approval_rules or () if isinstance(rule, dict)]
    if any(words):
        message += MSG_AWAITING_WHY.format(rules="; ".join(w for w in words if w))
    return AttemptOutcome(attempt, attempt.state, ok=False, message=message)


# --- Expiry ------------------------------------------------------------------------------


def request_overdue(attempt: ConclusionAttempt) -> bool:
    """A request for approval whose window has passed (whether or not it was closed yet)."""
    return attempt.is_awaiting_approval and attempt.expires_at is not None and attempt.expires_at <= timezone.now()


def approval_lapse(attempt: ConclusionAttempt) -> bool:
    """Close a request for approval whose window has passed: "expired", its claim released,
    an approval_expired entry; nothing is ever sent. Compare-and-set, so the worker's task,
    the cron job and a press that finds it overdue close it once; True when this call did.
    Safe to call early: a request still within its window is left alone."""
    now = timezone.now()
    columns = {
        "failure_reason": MSG_EXPIRED.format(
            doing=request_doing(attempt), hours=attempt.workspace.approval_window_hours
        ),
        "finished_at": now,
    }
    return attempt_transition(
        attempt,
        to=AttemptState.EXPIRED,
        step=AttemptState.EXPIRED,
        columns=columns,
        where={"expires_at__lte": now},
        release_claim=True,
        payload=lambda a: audit_payloads.reviewed(a, closed=True, claim_released=True),
        actor=None,
        actor_name=EXPIRY_NAME,
    )


def expire_request_when_due(attempt: ConclusionAttempt) -> None:
    """Queue the closing of a request for approval for the moment its window ends."""
    expire_request.using(run_after=attempt.expires_at).enqueue(attempt.pk)


@task()
def expire_request(attempt_id: int) -> str:
    """Close a request for approval that nobody approved or rejected within its window.

    Does nothing to a request already approved, rejected or expired (the usual case); one
    whose window has not quite ended (a clock ahead of this one) is looked at again when it
    has. Nothing is ever sent. Returns what it did: "expired", "already <state>", "missing"
    or RESULT_NOT_DUE.
    """
    with log_context(attempt_id=attempt_id):
        attempt = ConclusionAttempt.objects.select_related("workspace").filter(pk=attempt_id).first()
        if attempt is None:
            return RESULT_MISSING
        if not attempt.is_awaiting_approval:
            return f"already {attempt.state}"
        if not request_overdue(attempt):
            expire_request_when_due(attempt)
            return RESULT_NOT_DUE
        if approval_lapse(attempt):
            logger.info("Approval task: request #%s expired unapproved; nothing was sent.", attempt_id)
            return "expired"
        return f"already {attempt.state}"


# --- Reviewing ---------------------------------------------------------------------------


def attempt_review(
    *,
    attempt: ConclusionAttempt,
    user: Any,
    decision: str,
    note: str,
    client: MixpanelClient | None,
    via: str = "",
) -> AttemptOutcome:
    """Approve (`decision` "approve": sends the call, once) or reject a waiting request; its
    requester rejecting it withdraws it (state "withdrawn", with no reviewer).

    Refusals (not a concluder, one's own request, a rejection without a note, a request
    no longer waiting) come back as outcomes with a readable message and change nothing.
    `client` is only used by an approval.
    """
    note = (note or "").strip()
    refusal = _review_problem(attempt, user, decision, note)
    if refusal:
        return AttemptOutcome(
            attempt, attempt.state, ok=False, message=refusal, failure=_refusal_failure(attempt, refusal)
        )
    if decision == REJECT and attempt.actor_id == user.pk:
        return _withdraw(attempt, user, note, via)
    if decision == REJECT:
        return _reject(attempt, user, note, via)
    if not _mark_approved(attempt, user, note, via):
        return _no_longer_waiting_outcome(attempt)
    return attempt_send(attempt, client=client)


def _review_problem(attempt: ConclusionAttempt, user: Any, decision: str, note: str) -> str | None:
    access = workspace_selectors.workspace_access(user=user, workspace_pk=attempt.workspace_id)
    own = attempt.actor_id == user.pk
    if decision not in (APPROVE, REJECT) or ((access is None or not access.can_conclude) and not own):
        return MSG_FORBIDDEN
    if len(note) > NOTE_MAX_LENGTH:
        return MSG_NOTE_TOO_LONG
    if not attempt.is_awaiting_approval:
        return _no_longer_waiting(attempt)
    if request_overdue(attempt):
        approval_lapse(attempt)
        return MSG_EXPIRED_NOW.format(when=format_utc(attempt.expires_at))
    if decision == APPROVE and own:
        return MSG_SELF_APPROVAL
    if decision == APPROVE:
        # Two accounts of one person (a break-glass password account beside an SSO one) are one approver.
        shared = people_selectors.shared_identity(user=user, other=attempt.actor)
        if shared:
            return MSG_SAME_PERSON.format(who=attempt.actor_name, what=shared)
    if decision == REJECT and not own and not note:
        return MSG_NOTE_REQUIRED.format(who=attempt.actor_name)
    if decision == APPROVE:
        requester = workspace_selectors.workspace_access(user=attempt.actor, workspace_pk=attempt.workspace_id)
        if requester is None or not requester.can_conclude or not attempt.actor.is_active:
            return MSG_REQUESTER_CANNOT.format(who=attempt.actor_name, verb=VERB[attempt.action])
    return None


def _refusal_failure(attempt: ConclusionAttempt, refusal: str) -> str:
    """Why a review was refused, for callers that answer in HTTP: anything but these means
    the request is no longer waiting (a conflict)."""
    failures = {
        MSG_FORBIDDEN: FAILURE_FORBIDDEN,
        MSG_SELF_APPROVAL: FAILURE_FORBIDDEN,
        MSG_NOTE_TOO_LONG: FAILURE_INVALID,
        MSG_NOTE_REQUIRED.format(who=attempt.actor_name): FAILURE_INVALID,
    }
    return failures.get(refusal, FAILURE_CONFLICT)


def _no_longer_waiting_outcome(attempt: ConclusionAttempt) -> AttemptOutcome:
    return AttemptOutcome(
        attempt, attempt.state, ok=False, message=_no_longer_waiting(attempt), failure=FAILURE_CONFLICT
    )


def _no_longer_waiting(attempt: ConclusionAttempt) -> str:
    if attempt.is_awaiting_approval:  # lost a race with the expiry
        return MSG_EXPIRED_NOW.format(when=format_utc(attempt.expires_at))
    if attempt.state in MSG_ALREADY:
        return MSG_ALREADY[attempt.state].format(
            reviewer=attempt.reviewer_name or "someone", requester=attempt.actor_name or "its requester"
        )
    return MSG_ALREADY_APPROVED.format(reviewer=attempt.reviewer_name or "Someone")


def _review_columns(user: Any, note: str, now: dt.datetime, via: str) -> dict[str, Any]:
    return {"reviewer": user, "reviewer_name": acting_name(user, via), "review_note": note, "reviewed_at": now}


def _mark_approved(attempt: ConclusionAttempt, user: Any, note: str, via: str = "") -> bool:
    """Move the waiting request to "requested", with its entry and its reconcile task, in one
    transaction; False when it was no longer waiting (another approver, a rejection or the
    expiry came first). Only the caller that gets True may send."""
    now = timezone.now()
    columns = _review_columns(user, note, now, via)
    return attempt_transition(
        attempt,
        to=AttemptState.REQUESTED,
        step="approved",
        columns=columns,
        where={"expires_at__gt": now},
        payload=lambda a: audit_payloads.reviewed(a, closed=False, claim_released=False),
        # From here on it is an attempt like any press: if this process dies before the
        # outcome, the worker reads the experiment once the call cannot be in flight.
        then=reconcile_attempt_when_judgeable,
        actor=user,
        actor_name=columns["reviewer_name"],
    )


def _reject(attempt: ConclusionAttempt, user: Any, note: str, via: str) -> AttemptOutcome:
    """Close the waiting request unsent, releasing its claim, with the reviewer's note."""
    now = timezone.now()
    name = quoted_name(attempt.experiment_name, attempt.experiment_id)
    reviewer = _review_columns(user, note, now, via)
    columns = {
        **reviewer,
        "finished_at": now,
        "failure_reason": f"Rejected by {reviewer['reviewer_name']}: {note}. Nothing was sent.",
    }
    moved = attempt_transition(
        attempt,
        to=AttemptState.REJECTED,
        step=AttemptState.REJECTED,
        columns=columns,
        release_claim=True,
        payload=lambda a: audit_payloads.reviewed(a, closed=True, claim_released=True),
        actor=user,
        actor_name=reviewer["reviewer_name"],
    )
    if not moved:
        return _no_longer_waiting_outcome(attempt)
    message = MSG_REJECTED.format(undone=UNDONE[attempt.action].format(name=name), who=attempt.actor_name)
    return AttemptOutcome(attempt, AttemptState.REJECTED, ok=False, message=message)


def _withdraw(attempt: ConclusionAttempt, user: Any, note: str, via: str) -> AttemptOutcome:
    """The requester closes their own request unsent, releasing its claim. Nobody reviewed
    it, so the review columns stay blank; the entry is the requester's."""
    name = quoted_name(attempt.experiment_name, attempt.experiment_id)
    columns = {
        "finished_at": timezone.now(),
        "failure_reason": f"Withdrawn by the requester{': ' + note if note else ''}. Nothing was sent.",
    }
    moved = attempt_transition(
        attempt,
        to=AttemptState.WITHDRAWN,
        step=AttemptState.WITHDRAWN,
        columns=columns,
        release_claim=True,
        payload=lambda a: audit_payloads.reviewed(a, closed=True, claim_released=True),
        actor=user,
        actor_name=acting_name(user, via),
    )
    if not moved:
        return _no_longer_waiting_outcome(attempt)
    return AttemptOutcome(
        attempt,
        AttemptState.WITHDRAWN,
        ok=False,
        message=MSG_WITHDRAWN.format(asked=ASKED[attempt.action].format(name=name)),
    )
