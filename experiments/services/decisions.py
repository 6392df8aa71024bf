"""The Record the decision press on a concluded experiment: who may press, what they decided,
and the one PATCH, with its audit trail.

It runs on the same machinery as Force conclude (the state machine in services.attempts,
the call in services.sending, two-person approval in services.approvals), with its own
claim per experiment: the conclusion's claim stays after it succeeded. The workspace's
approval policy applies to it as to Force conclude (selectors.approval_risk).
"""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from experiments.dates import format_utc
from experiments.mixpanel.client import MixpanelClient
from experiments.models import AttemptAction, ConclusionClaim, Workspace
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

# The note goes upstream as the decision's message and into the audit trail.
NOTE_MAX_LENGTH = 2000

MSG_FORBIDDEN = (
    "You may not record decisions on experiments in this workspace. Ask a workspace admin for the concluder role."
)
MSG_NO_EXPERIMENT = "That is not a valid experiment id."
MSG_NO_NOTE = "Write a note saying why: it is sent to Mixpanel with the decision."
MSG_NOTE_TOO_LONG = f"Keep the note under {NOTE_MAX_LENGTH} characters."
MSG_NO_VARIANT = "Choose the variant to ship."
MSG_BLOCKED_IN_FLIGHT = (
    "Not sent: the decision on {name} is already being recorded by {who} since {when}. "
    "Wait for that attempt to finish; its outcome will show here."
)
MSG_BLOCKED_DONE = "Not sent: the decision on {name} was already recorded by {who} at {when}."
MSG_BLOCKED_RACE = (
    "Not sent: another decision on {name} finished a moment ago. Refresh to see its outcome before trying again."
)
MSG_BLOCKED_AWAITING = (
    "Not sent: {who} asked at {when} to record the decision on {name}, and that request waits for approval. "
    "Approve or reject it instead."
)


def experiment_decide(
    *,
    workspace: Workspace,
    user: Any,
    experiment_id: str,
    experiment_name: str,
    variant: str | None,
    note: str,
    client: MixpanelClient,
    via: str = "",
) -> AttemptOutcome:
    """Record the decision on one concluded experiment in Mixpanel, at most once, and audit every step.

    `variant` is the key of the variant to ship, or None to ship none. Sends PATCH
    .../decide with {"success", "variant", "message": note} once, never retried. Like
    force conclude: claim and intent committed first, then a read that proves the
    experiment is this one and concluded, then the PATCH, then the outcome recorded only
    while the attempt is still open. Never raises for anything Mixpanel does. Where the
    workspace's approval policy says this decision needs two-person approval, the press
    sends nothing: it records a request that services.approvals approves (which sends the
    PATCH, once) or rejects.
    """
    refusal = _request_problem(workspace, user, experiment_id, note)
    if refusal:
        return refused(refusal, failure=FAILURE_FORBIDDEN if refusal == MSG_FORBIDDEN else FAILURE_INVALID)
    request = {
        **attempt_request(
            workspace=workspace, user=user, experiment_id=experiment_id, experiment_name=experiment_name, via=via
        ),
        "action": AttemptAction.DECISION,
        "reason_category": "",
        "reason_text": note,
        "end_date": None,
        # Exactly the PATCH body.
        "request_body": {"success": variant is not None, "variant": variant or "", "message": note},
    }
    name = quoted_name(request["experiment_name"], experiment_id)
    # 0. The policy's verdict, on the press's one read where the policy needs one.
    judged = approval_judge(
        workspace=workspace,
        action=AttemptAction.DECISION,
        experiment_id=experiment_id,
        variant=variant,
        client=client,
        now=timezone.now(),
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


def _request_problem(workspace: Workspace, user: Any, experiment_id: str, note: str) -> str | None:
    """Why this request is refused before anything is recorded, or None."""
    access = workspace_selectors.workspace_access(user=user, workspace_pk=workspace.pk)
    if access is None or not access.can_conclude:
        return MSG_FORBIDDEN
    if experiment_id_problem(experiment_id):
        return MSG_NO_EXPERIMENT
    if not note.strip():
        return MSG_NO_NOTE
    if len(note) > NOTE_MAX_LENGTH:
        return MSG_NOTE_TOO_LONG
    return None


def _blocked_message(holder: ConclusionClaim | None, name: str) -> str:
    if holder is None:
        return MSG_BLOCKED_RACE.format(name=name)
    held = holder.attempt
    if held.is_applied:
        return MSG_BLOCKED_DONE.format(name=name, who=held.actor_name, when=format_utc(held.finished_at))
    if held.is_awaiting_approval:
        return MSG_BLOCKED_AWAITING.format(name=name, who=held.actor_name, when=format_utc(held.created_at))
    return MSG_BLOCKED_IN_FLIGHT.format(name=name, who=held.actor_name, when=format_utc(held.created_at))
