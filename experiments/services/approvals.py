"""Two-person approval: asking, approving (which sends the call, once), rejecting,
withdrawing, and the expiry of a request nobody decided on. The same for both actions: a
Force conclude and a decision (Record the decision).

Asking is a press that the workspace's approval policy says needs a second person
(selectors.approval_risk): the experiment is read once, so the request records Mixpanel's
`modified` and the plan's hash (a failed read refuses the press), the attempt is recorded as
"awaiting_approval" with the experiment's claim and the rules that made it a request, and an
`expire_request` task is queued for the end of its window. Nothing is sent.

An approval reads the experiment again first: if `modified` or the plan's hash moved since
the request, the request is closed "stale", unsent, its claim released, so its requester can
ask again about the experiment as it now is.

An approval is the request's claim and intent carried forward: it only moves the attempt
from "awaiting_approval" to "requested" (with its entry and its reconcile task, in one
transaction) and then runs the same read, call and outcome as a press. Two approvers
pressing at once, or an approval racing the expiry, move it once: only the winner sends.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.tasks import task
from django.utils import timezone

from experiments import audit_payloads
from experiments.dates import format_utc
from experiments.mixpanel.client import MixpanelClient
from experiments.mixpanel.errors import MixpanelError
from experiments.mixpanel.experiment import Experiment
from experiments.mixpanel.plan import changed_fields, experiment_plan, plan_changes
from experiments.models import (
    ApprovalPolicy,
    AttemptAction,
    AttemptState,
    ConclusionAttempt,
    ConclusionClaim,
    Workspace,
)
from experiments.observability import log_context
from experiments.selectors import approval_risk
from experiments.selectors import people as people_selectors
from experiments.selectors import plans as plan_selectors
from experiments.selectors import workspaces as workspace_selectors
from experiments.services.attempts import (
    FAILURE_CONFLICT,
    FAILURE_FORBIDDEN,
    FAILURE_INVALID,
    FAILURE_UPSTREAM,
    AttemptOutcome,
    acting_name,
    attempt_claim,
    attempt_transition,
    quoted_name,
    record_blocked,
)
from experiments.services.plans import plan_observe
from experiments.services.reconcile import reconcile_attempt_when_judgeable
from experiments.services.sending import PressRead, attempt_send, press_read

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
    AttemptState.STALE: "This request was closed: the experiment changed in Mixpanel since it was made. "
    "Nothing was sent; ask again if still needed.",
}
MSG_ALREADY_APPROVED = "{reviewer} already approved this request; it was sent once, by that approval."
MSG_REJECTED = "Rejected: {undone}. {who} sees your note."
MSG_WITHDRAWN = "Withdrawn: your request to {asked} is closed. Nothing was sent."
ASKED = {
    AttemptAction.CONCLUSION: "force conclude {name}",
    AttemptAction.DECISION: "record the decision on {name}",
}

MSG_ASK_READ_FAILED = (
    "Nothing was recorded or sent: the experiment could not be read from Mixpanel, and a request for approval "
    "records the experiment as it is when asked. Try again in a moment. {error}"
)
MSG_APPROVE_READ_FAILED = (
    "Not approved yet: the experiment could not be read from Mixpanel to check it has not changed since the "
    "request. Nothing was sent and the request still waits; try again in a moment. {error}"
)
MSG_STALE = (
    "Not approved: {name} changed in Mixpanel at {when} since the request: {fields}. Nothing was sent; the "
    "request is closed, and {who} can ask again about the experiment as it is now."
)
# How a stale refusal names a change that touched no part of the plan.
STALE_ONLY_MODIFIED = "its last-modified time (no part of the plan)"

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


@dataclass(frozen=True)
class PressJudgement:
    """What the approval policy made of one press, and the press's one read of the experiment."""

    read: PressRead | None  # None where the policy reads nothing; passed on to the call
    verdict: approval_risk.ApprovalVerdict
    # What a request for approval records of the read: Mixpanel's `modified` and the plan's hash.
    basis: dict[str, Any] = field(default_factory=dict)
    refusal: str = ""  # why no request can be made: its read failed


def approval_judge(
    *,
    workspace: Workspace,
    action: str,
    experiment_id: str,
    variant: str | None = None,
    client: MixpanelClient,
    now: dt.datetime,
) -> PressJudgement:
    """Judge one press by the workspace's approval policy, reading the experiment once.

    Under "never" nothing is read. Otherwise the read observes the plan (sealed at its first
    sight active, a change recorded) and, under "when risky", the rules judge it as read, at
    `now` (a conclusion's end, a decision's moment). A read that failed, or found nothing to
    act on, makes no press risky: the press goes on and its own check fails it, sending
    nothing. A request records the read, so an approval can tell the experiment changed since;
    one whose read failed cannot, and is refused before anything is recorded.
    """
    policy = workspace.approval_policy
    if policy == ApprovalPolicy.NEVER:
        return PressJudgement(
            None, approval_risk.press_verdict(workspace=workspace, action=action, experiment=None, now=now)
        )
    read = press_read(workspace=workspace, experiment_id=experiment_id, client=client)
    experiment = read.experiment if read.experiment is not None and read.experiment.id == experiment_id else None
    if experiment is not None:
        plan_observe(workspace=workspace, experiment=experiment)
    actionable = experiment is not None and (
        experiment.is_active if action == AttemptAction.CONCLUSION else experiment.status == "concluded"
    )
    if policy == ApprovalPolicy.RISKY and not actionable:
        return PressJudgement(read, approval_risk.ApprovalVerdict(policy, needed=False, rules=()))
    verdict = approval_risk.press_verdict(
        workspace=workspace, action=action, experiment=experiment, variant=variant, now=now
    )
    if not verdict.needed:
        return PressJudgement(read, verdict)
    if experiment is None:
        error = str(read.error or "") or MixpanelError.default_message
        return PressJudgement(read, verdict, refusal=MSG_ASK_READ_FAILED.format(error=error))
    basis = {"experiment_modified": experiment.modified, "plan_hash": experiment_plan(experiment).hash}
    return PressJudgement(read, verdict, basis=basis)


def approval_press(
    *,
    workspace: Workspace,
    request: dict[str, Any],
    judged: PressJudgement,
    client: MixpanelClient,
    blocked_message: Callable[[ConclusionClaim | None], str],
) -> AttemptOutcome:
    """The rest of a press once judged, the same for both actions: the request for approval
    where the verdict asks for one, then claim and intent committed before anything is sent
    (a claim held by a request nobody approved in time is closed first; a press that loses
    the claim is recorded as refused, with `blocked_message(holder)`), then either the wait
    for a second person or the read, the one call and the outcome."""
    then = reconcile_attempt_when_judgeable
    if judged.verdict.needed:
        # This press only asks; an approval sends, and a request nobody decides on lapses. It
        # records the experiment as read now, so an approval can tell it changed since.
        request.update(judged.basis)
        request.update(approval_request_columns(workspace, request, rules=judged.verdict.as_record()))
        then = expire_request_when_due
    attempt, holder = attempt_claim(request=request, then=then)
    if attempt is None and holder is not None and request_overdue(holder.attempt):
        approval_lapse(holder.attempt)
        attempt, holder = attempt_claim(request=request, then=then)
    if attempt is None:
        return record_blocked(request, holder=holder, message=blocked_message(holder))
    if attempt.is_awaiting_approval:
        return approval_asked(attempt)
    # The read (or the one the judgement made), the call once, the outcome.
    return attempt_send(attempt, client=client, read=judged.read)


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
    stale = _stale_check(attempt, user, client, via)
    if stale is not None:
        return stale
    if not _mark_approved(attempt, user, note, via):
        return _no_longer_waiting_outcome(attempt)
    return attempt_send(attempt, client=client)


def _stale_check(attempt: ConclusionAttempt, user: Any, client: Any, via: str) -> AttemptOutcome | None:
    """Read the experiment again before an approval sends anything: None when it is as the
    request recorded it; else the refusal (a failed read leaves the request waiting; a change
    closes it "stale", its claim released). A request that recorded nothing is not checked."""
    if attempt.experiment_modified is None and not attempt.plan_hash:
        return None
    try:
        current = client.get_experiment(attempt.workspace.mixpanel_workspace_id, attempt.experiment_id)
    except MixpanelError as exc:
        message = MSG_APPROVE_READ_FAILED.format(error=str(exc) or MixpanelError.default_message)
        return AttemptOutcome(attempt, attempt.state, ok=False, message=message, failure=FAILURE_UPSTREAM)
    plan = experiment_plan(current)
    if current.modified == attempt.experiment_modified and plan.hash == attempt.plan_hash:
        return None
    changes = _changes_since_request(attempt, current)
    plan_observe(workspace=attempt.workspace, experiment=current)
    return _close_stale(attempt, user, via, current, changes)


def _changes_since_request(attempt: ConclusionAttempt, current: Experiment) -> list[dict[str, Any]]:
    """What changed since the request: the plan's fields, when the chain holds the plan the
    request saw (the seal or a change with the hash the request recorded), and `modified`."""
    plan = experiment_plan(current)
    changes: list[dict[str, Any]] = []
    if plan.hash != attempt.plan_hash:
        asked = plan_selectors.plan_with_hash(
            workspace_id=attempt.workspace_id, experiment_id=attempt.experiment_id, plan_hash=attempt.plan_hash
        )
        if asked is not None:
            changes = plan_changes(asked, plan.data)
        else:
            changes = [{"field": "plan", "before": attempt.plan_hash, "after": plan.hash}]
    if current.modified != attempt.experiment_modified:
        changes.append(
            {
                "field": "modified",
                "before": audit_payloads.as_json(attempt.experiment_modified),
                "after": audit_payloads.as_json(current.modified),
            }
        )
    return changes


def _close_stale(
    attempt: ConclusionAttempt, user: Any, via: str, current: Experiment, changes: list[dict[str, Any]]
) -> AttemptOutcome:
    """Close the request unsent as stale, releasing its claim: nobody rejected it, so the review
    columns stay blank; the entry is the approver's, whose approval found the change."""
    name = quoted_name(attempt.experiment_name, attempt.experiment_id)
    plan_fields = [change for change in changes if change.get("field") != "modified"]
    fields = changed_fields(plan_fields) if plan_fields else STALE_ONLY_MODIFIED
    when = format_utc(current.modified) if current.modified is not None else "an unknown time"
    message = MSG_STALE.format(name=name, when=when, fields=fields, who=attempt.actor_name)
    moved = attempt_transition(
        attempt,
        to=AttemptState.STALE,
        step=AttemptState.STALE,
        columns={"finished_at": timezone.now(), "failure_reason": message},
        release_claim=True,
        payload=lambda a: audit_payloads.stale(a, current=current, changes=changes),
        actor=user,
        actor_name=acting_name(user, via),
    )
    if not moved:
        return _no_longer_waiting_outcome(attempt)
    return AttemptOutcome(attempt, AttemptState.STALE, ok=False, message=message, failure=FAILURE_CONFLICT)


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
