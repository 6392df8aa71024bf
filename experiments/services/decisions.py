"""The Record the decision press on a concluded experiment: who may press, what they decided,
and the one PATCH, with its audit trail.

It runs on the same machinery as Force conclude (the state machine in services.attempts,
the call in services.sending), with its own claim per experiment: the conclusion's claim
stays after it succeeded.
"""

from __future__ import annotations

from typing import Any

from experiments.dates import format_utc
from experiments.mixpanel.client import MixpanelClient
from experiments.models import AttemptAction, ConclusionClaim, Workspace
from experiments.selectors import workspaces as workspace_selectors
from experiments.services.attempts import (
    FAILURE_FORBIDDEN,
    FAILURE_INVALID,
    AttemptOutcome,
    attempt_claim,
    attempt_request,
    experiment_id_problem,
    quoted_name,
    record_blocked,
    refused,
)
from experiments.services.reconcile import reconcile_attempt_when_judgeable
from experiments.services.sending import attempt_send

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
    while the attempt is still open. Never raises for anything Mixpanel does.
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

    # 1. Claim and intent, committed before anything is sent.
    attempt, holder = attempt_claim(request=request, then=reconcile_attempt_when_judgeable)
    if attempt is None:
        return record_blocked(request, holder=holder, message=_blocked_message(holder, name))
    # 2. The read, the PATCH once, the outcome.
    return attempt_send(attempt, client=client)


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
    return MSG_BLOCKED_IN_FLIGHT.format(name=name, who=held.actor_name, when=format_utc(held.created_at))
