"""The Force conclude press: who may press, what they asked, and the one PUT (or the request
for approval), with its audit trail.

Record intent, act, record outcome. experiment_force_conclude reads top to bottom:
  0. where approval applies only when risky, one read of the experiment, which the
     approval policy judges (selectors.approval_risk) and the PUT's check reuses;
  1. one transaction inserts the attempt, its claim, its first entry and the task that
     will resolve it, and commits; a press that loses the claim is recorded as refused
     and sends nothing;
  2. when the policy says it needs two-person approval, that is all: the attempt waits
     for a second person (services.approvals), with the rules that made it a request;
  3. otherwise the read (or the one already made), the PUT once and the outcome
     (services.sending).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.utils import timezone

from experiments.dates import end_date_problem, format_utc
from experiments.mixpanel.client import MixpanelClient
from experiments.mixpanel.experiment import format_end_date
from experiments.models import AttemptAction, ConclusionClaim, ReasonCategory, Workspace
from experiments.selectors import workspaces as workspace_selectors
from experiments.services.approvals import approval_judge, approval_press
from experiments.services.attempts import (
    FAILURE_FORBIDDEN,
    FAILURE_INVALID,
    FAILURE_UPSTREAM,
    AttemptOutcome,
    attempt_request,
    experiment_id_problem,
    quoted_name,
    refused,
)

# Readable answers, as constants so tests and views can match them.
MSG_FORBIDDEN = (
    "You may not force conclude experiments in this workspace. Ask a workspace admin for the concluder role."
)
MSG_BAD_REASON = "Choose a reason from the list."
MSG_NO_EXPERIMENT = "That is not a valid experiment id."
MSG_BAD_END_DATE = "Nothing was sent. {problem}"
MSG_BLOCKED_IN_FLIGHT = (
    "Not sent: {name} is already being concluded by {who} since {when}. "
    "Wait for that attempt to finish; its outcome will show here."
)
MSG_BLOCKED_DONE = "Not sent: {name} was already concluded by {who} at {when}."
MSG_BLOCKED_RACE = (
    "Not sent: another attempt on {name} finished a moment ago. Refresh to see its outcome before trying again."
)
MSG_BLOCKED_AWAITING = (
    "Not sent: {who} asked at {when} to force conclude {name}, and that request waits for approval. "
    "Approve or reject it instead."
)


def experiment_force_conclude(
    *,
    workspace: Workspace,
    user: Any,
    experiment_id: str,
    experiment_name: str,
    reason_category: str,
    reason_text: str,
    end_date: dt.datetime,
    client: MixpanelClient,
    via: str = "",
) -> AttemptOutcome:
    """Force conclude one experiment in Mixpanel, at most once, and audit every step.

    `experiment_id` must be exactly the id Mixpanel gave (it is never cleaned up here: a
    near-twin id is another experiment). Never raises for anything Mixpanel does: every
    upstream failure comes back as an outcome with a readable message. The user's role
    is checked here too, because this call changes the world. Where the workspace's
    approval policy says this press needs two-person approval (always, or when risky and
    a risk rule applies to the experiment as read now) the press sends nothing: it
    records a request (state "awaiting_approval", holding the claim, with the rules that
    made it one) that services.approvals approves, which sends, or rejects.
    """
    refusal = _request_problem(workspace, user, experiment_id, reason_category, end_date)
    if refusal:
        return refused(refusal, failure=FAILURE_FORBIDDEN if refusal == MSG_FORBIDDEN else FAILURE_INVALID)
    request = {
        **attempt_request(
            workspace=workspace, user=user, experiment_id=experiment_id, experiment_name=experiment_name, via=via
        ),
        "reason_category": reason_category,
        "reason_text": reason_text,
        "end_date": end_date,
        "request_body": {"end_date": format_end_date(end_date)},
        # Pressed where an admin turned two-person approval off: the attempt and its entry say so.
        "approval_off_since": None if workspace.requires_approval else workspace.approval_off_at,
    }
    name = quoted_name(request["experiment_name"], experiment_id)
    # 0. The policy's verdict, on the press's one read where the policy needs one. The
    # planned length is judged at the end asked for.
    judged = approval_judge(
        workspace=workspace, action=AttemptAction.CONCLUSION, experiment_id=experiment_id, client=client, now=end_date
    )
    if judged.refusal:
        return refused(judged.refusal, failure=FAILURE_UPSTREAM)
    # 1. Claim and intent (or the request for approval), then the call or the wait for approval.
    return approval_press(
        workspace=workspace,
        request=request,
        judged=judged,
        client=client,
        blocked_message=lambda holder: _blocked_message(holder, name),
    )


def conclude_permission_problem(*, workspace: Workspace, user: Any) -> str | None:
    """Why `user` may not force conclude in `workspace` (MSG_FORBIDDEN), or None when they may.
    The one rule: a press, scheduling a press, and a schedule's firing all ask it."""
    access = workspace_selectors.workspace_access(user=user, workspace_pk=workspace.pk)
    if access is None or not access.can_conclude or not user.is_active:
        return MSG_FORBIDDEN
    return None


def _request_problem(
    workspace: Workspace, user: Any, experiment_id: str, reason_category: str, end_date: dt.datetime
) -> str | None:
    """Why this request is refused before anything is recorded, or None."""
    forbidden = conclude_permission_problem(workspace=workspace, user=user)
    if forbidden:
        return forbidden
    if experiment_id_problem(experiment_id):
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
    if held.is_applied:
        return MSG_BLOCKED_DONE.format(name=name, who=held.actor_name, when=format_utc(held.finished_at))
    if held.is_awaiting_approval:
        return MSG_BLOCKED_AWAITING.format(name=name, who=held.actor_name, when=format_utc(held.created_at))
    return MSG_BLOCKED_IN_FLIGHT.format(name=name, who=held.actor_name, when=format_utc(held.created_at))
