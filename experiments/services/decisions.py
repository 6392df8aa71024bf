"""Writes for recording the decision on a concluded experiment: the one upstream PATCH.

It runs on the same machinery as force conclude (experiments.services.attempts and
the outcome recording in experiments.services.conclusions), with its own claim per
experiment: the conclusion's claim stays after it succeeded.
"""

from __future__ import annotations

import time
from typing import Any

from django.utils import timezone

from experiments import auditlog
from experiments.dates import format_utc
from experiments.mixpanel import client as mixpanel
from experiments.mixpanel.experiment import DECIDED_STATUSES, ConcludeResult, Experiment, variant_summaries
from experiments.models import AttemptAction, AttemptState, ConclusionAttempt, ConclusionClaim, Workspace
from experiments.selectors import workspaces as workspace_selectors
from experiments.services import attempts
from experiments.services.conclusions import (
    MSG_NO_EXPERIMENT,
    MSG_WRONG_EXPERIMENT,
    ConclusionOutcome,
    answer_evidence,
    finish_attempt,
    invalidate_list,
    quoted_name,
    read_failure,
    record_blocked,
    write_failed,
)

# The note goes upstream as the decision's message and into the audit trail.
NOTE_MAX_LENGTH = 2000

MSG_FORBIDDEN = (
    "You may not record decisions on experiments in this workspace. Ask a workspace admin for the concluder role."
)
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
MSG_DELETED = "Nothing was sent: Mixpanel shows {name} as deleted."
MSG_ALREADY_DECIDED = (
    "Nothing was sent: Mixpanel shows {name} as already decided ({status}). See the audit trail for who decided it."
)
MSG_NOT_CONCLUDED = "Nothing was sent: Mixpanel shows {name} as {status}; only a concluded experiment can be decided."
MSG_UNKNOWN_VARIANT = "Nothing was sent: Mixpanel lists no variant {variant!r} on {name}."
MSG_SUCCEEDED = "Decision recorded: {name} is now {status} in Mixpanel ({what}). No feature flag was changed."
MSG_PATCH_FAILED = "Mixpanel did not record the decision on {name}; nothing was changed. {error}"
MSG_NOT_APPLIED = (
    "Mixpanel answered but did not record the decision on {name}: it is still {status}. Nothing was changed; "
    "check the experiment in Mixpanel before trying again."
)
MSG_UNKNOWN = (
    "The decision on {name} was sent, but no trustworthy answer came back, so we do not know yet whether "
    "Mixpanel applied it. Do not retry: this attempt stays open until it is reconciled by reading the "
    "experiment from Mixpanel. What happened: {error}"
)
MSG_ANSWERED_OTHER = "Mixpanel answered with a different experiment than the one decided."


def decision_words(*, success: bool, variant: str) -> str:
    """The decision as a person says it: "ship variant treatment" or "ship none"."""
    return f"ship variant {variant}" if success else "ship none"


def variant_keys(experiment: Experiment) -> tuple[str, ...]:
    """The keys a decision may ship, read by the same rule as the experiment page's variants table."""
    return tuple(v.key for v in variant_summaries(experiment.variants, experiment.exposures_cache))


def experiment_decide(
    *,
    workspace: Workspace,
    user: Any,
    experiment_id: str,
    experiment_name: str,
    variant: str | None,
    note: str,
    client: mixpanel.MixpanelClient,
) -> ConclusionOutcome:
    """Record the decision on one concluded experiment in Mixpanel, at most once, and audit every step.

    `variant` is the key of the variant to ship, or None to ship none. Sends
    PATCH .../decide with {"success", "variant", "message": note} once, never
    retried. Like force conclude: claim and intent committed first, then a read
    that proves the experiment is this one and concluded, then the PATCH, then
    the outcome recorded only while the attempt is still open. Never raises for
    anything Mixpanel does.
    """
    refusal = _request_problem(workspace, user, experiment_id, note)
    if refusal:
        return ConclusionOutcome(attempt=None, state=AttemptState.FAILED, ok=False, message=refusal)
    request = _request(workspace, user, experiment_id, experiment_name, variant, note)
    name = quoted_name(request["experiment_name"], experiment_id)

    # 1. Claim and intent, committed before anything is sent.
    attempt, holder = attempts.attempt_claim(request=request)
    if attempt is None:
        return record_blocked(request, holder=holder, message=_blocked_message(holder, name))

    # 2. The read: proves the experiment is this one, in this workspace, concluded and undecided.
    try:
        before = client.get_experiment(workspace.mixpanel_workspace_id, experiment_id)
    except Exception as exc:
        return finish_attempt(attempt, AttemptState.FAILED, read_failure(exc, attempt), True, error=exc)
    problem = _not_decidable(before, attempt, name)
    if problem:
        return finish_attempt(attempt, AttemptState.FAILED, problem, True, before=before)

    # 3. The PATCH, once. Whatever it raises is recorded; nothing is retried.
    body = attempt.request_body
    started = time.monotonic()
    try:
        result = client.decide(
            workspace.mixpanel_workspace_id,
            experiment_id,
            success=body["success"],
            variant=body["variant"],
            message=body["message"],
        )
    except Exception as exc:
        return write_failed(attempt, exc, before=before, started=started, failed=MSG_PATCH_FAILED, unknown=MSG_UNKNOWN)

    # 4. An answer came: record what it says.
    outcome = _patch_answered(attempt, result, name=name, before=before, started=started)
    if outcome.ok:
        invalidate_list(workspace)
    return outcome


def _patch_answered(
    attempt: ConclusionAttempt,
    result: ConcludeResult,
    *,
    name: str,
    before: Experiment,
    started: float,
) -> ConclusionOutcome:
    """Record a PATCH that answered: applied only if the returned experiment is this one, decided."""
    returned = result.experiment
    evidence = answer_evidence(result, before=before, started=started)
    if returned.id != attempt.experiment_id:
        message = MSG_UNKNOWN.format(name=name, error=MSG_ANSWERED_OTHER)
        return finish_attempt(attempt, AttemptState.UNKNOWN, message, False, **evidence)
    if returned.status not in DECIDED_STATUSES:
        message = MSG_NOT_APPLIED.format(name=name, status=returned.status)
        return finish_attempt(attempt, AttemptState.FAILED, message, True, shown=returned, **evidence)
    body = attempt.request_body
    what = decision_words(success=body["success"], variant=body["variant"])
    message = MSG_SUCCEEDED.format(name=name, status=returned.status, what=what)
    return finish_attempt(attempt, AttemptState.SUCCEEDED, message, False, shown=returned, **evidence)


def _request(
    workspace: Workspace, user: Any, experiment_id: str, experiment_name: str, variant: str | None, note: str
) -> dict[str, Any]:
    """The new attempt's fields, as the person asked; request_body is exactly the PATCH body."""
    max_name = ConclusionAttempt._meta.get_field("experiment_name").max_length
    return {
        "action": AttemptAction.DECISION,
        "created_at": timezone.now(),
        "workspace": workspace,
        "actor": user,
        "actor_name": auditlog.display_name(user),
        "experiment_id": experiment_id,
        "experiment_name": (experiment_name or "")[:max_name],
        "reason_category": "",
        "reason_text": note,
        "end_date": None,
        "request_body": {"success": variant is not None, "variant": variant or "", "message": note},
    }


def _request_problem(workspace: Workspace, user: Any, experiment_id: str, note: str) -> str | None:
    """Why this request is refused before anything is recorded, or None."""
    access = workspace_selectors.workspace_access(user=user, workspace_pk=workspace.pk)
    if access is None or not access.can_conclude:
        return MSG_FORBIDDEN
    max_length = ConclusionAttempt._meta.get_field("experiment_id").max_length
    if not experiment_id.strip() or len(experiment_id) > max_length:
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
    if held.state in (AttemptState.SUCCEEDED, AttemptState.RECONCILED_APPLIED):
        return MSG_BLOCKED_DONE.format(name=name, who=held.actor_name, when=format_utc(held.finished_at))
    return MSG_BLOCKED_IN_FLIGHT.format(name=name, who=held.actor_name, when=format_utc(held.created_at))


def _not_decidable(before: Experiment, attempt: ConclusionAttempt, name: str) -> str | None:
    """Why the experiment as read may not be decided by this attempt, or None."""
    if before.id != attempt.experiment_id:
        return MSG_WRONG_EXPERIMENT
    if before.deleted is not None:
        return MSG_DELETED.format(name=name)
    if before.status in DECIDED_STATUSES:
        return MSG_ALREADY_DECIDED.format(name=name, status=before.status)
    if before.status != "concluded":
        return MSG_NOT_CONCLUDED.format(name=name, status=before.status)
    variant = attempt.request_body["variant"]
    if attempt.request_body["success"] and variant not in variant_keys(before):
        return MSG_UNKNOWN_VARIANT.format(variant=variant, name=name)
    return None
