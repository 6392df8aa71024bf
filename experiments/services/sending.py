"""The one upstream call of an attempt: read the experiment, call Mixpanel once, record the outcome.

Record intent, act, record outcome. By the time `attempt_send` runs, the attempt, its
claim and its first entry are committed ("requested"). Then:
  1. a read of the experiment under the attempt's workspace proves it is the one the
     person confirmed, and in a state the action applies to;
  2. the call, once, never retried: the force-conclude PUT or the decide PATCH;
  3. the outcome is recorded, only while the attempt is still open.
No transaction or lock is held while we wait on Mixpanel. A definite failure releases
the claim (a person may try again as a new attempt); an unknown outcome keeps it until
reconciling reads the experiment. Nothing Mixpanel does makes this raise.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from experiments import audit_payloads, auditlog, metrics
from experiments.dates import end_date_problem, format_utc
from experiments.mixpanel.client import MixpanelClient
from experiments.mixpanel.errors import MixpanelError, MixpanelNotFound
from experiments.mixpanel.experiment import DECIDED_STATUSES, ConcludeResult, Experiment, variant_summaries
from experiments.mixpanel.wire import call_outcome
from experiments.models import AttemptAction, AttemptState, ConclusionAttempt
from experiments.services.attempts import (
    FAILURE_CONFLICT,
    FAILURE_NOT_FOUND,
    FAILURE_TIMEOUT,
    FAILURE_UPSTREAM,
    AttemptOutcome,
    finish_attempt,
    log_unexpected,
    quoted_name,
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
MSG_BAD_END_DATE = "Nothing was sent. {problem}"

# Force conclude.
MSG_NOT_ACTIVE = "Nothing was sent: Mixpanel shows {name} as {status}, not active, so there is nothing to conclude."
MSG_ALREADY_CONCLUDED = (
    "Nothing was sent: Mixpanel shows {name} as already {status}. It was concluded outside this dashboard "
    "or by an earlier attempt; see the audit trail."
)
MSG_CONCLUDED = (
    "Concluded: {name} is now {status} in Mixpanel, its analysis ending {end}. "
    "No decision was recorded and no feature flag was changed."
)
MSG_PUT_FAILED = "Mixpanel did not conclude {name}; nothing was changed. {error}"
MSG_PUT_NOT_APPLIED = (
    "Mixpanel answered but did not conclude {name}: it is still {status}. Nothing was changed; "
    "check the experiment in Mixpanel before trying again."
)
MSG_PUT_UNKNOWN = (
    "The request to conclude {name} was sent, but no trustworthy answer came back, so we do not know yet "
    "whether Mixpanel applied it. Do not retry: this attempt stays open until it is reconciled by reading "
    "the experiment from Mixpanel. What happened: {error}"
)
MSG_PUT_ANSWERED_OTHER = "Mixpanel answered with a different experiment than the one concluded."

# Record the decision.
MSG_ALREADY_DECIDED = (
    "Nothing was sent: Mixpanel shows {name} as already decided ({status}). See the audit trail for who decided it."
)
MSG_NOT_CONCLUDED = "Nothing was sent: Mixpanel shows {name} as {status}; only a concluded experiment can be decided."
MSG_UNKNOWN_VARIANT = "Nothing was sent: Mixpanel lists no variant {variant!r} on {name}."
MSG_DECIDED = "Decision recorded: {name} is now {status} in Mixpanel ({what}). No feature flag was changed."
MSG_PATCH_FAILED = "Mixpanel did not record the decision on {name}; nothing was changed. {error}"
MSG_PATCH_NOT_APPLIED = (
    "Mixpanel answered but did not record the decision on {name}: it is still {status}. Nothing was changed; "
    "check the experiment in Mixpanel before trying again."
)
MSG_PATCH_UNKNOWN = (
    "The decision on {name} was sent, but no trustworthy answer came back, so we do not know yet whether "
    "Mixpanel applied it. Do not retry: this attempt stays open until it is reconciled by reading the "
    "experiment from Mixpanel. What happened: {error}"
)
MSG_PATCH_ANSWERED_OTHER = "Mixpanel answered with a different experiment than the one decided."


def variant_keys(experiment: Experiment) -> tuple[str, ...]:
    """The keys a decision may ship, read by the same rule as the experiment page's variants table."""
    return tuple(v.key for v in variant_summaries(experiment.variants, experiment.exposures_cache))


@dataclass(frozen=True, slots=True)
class PressRead:
    """A press's one read of the experiment, made before its claim where the approval policy
    must judge it, and passed along so the call that follows does not read again: the
    experiment, or what the read raised."""

    experiment: Experiment | None
    error: BaseException | None = None


def press_read(*, workspace: Any, experiment_id: str, client: MixpanelClient) -> PressRead:
    """Read the experiment once for a press. Never raises: a failure is kept for the attempt's outcome."""
    try:
        return PressRead(client.get_experiment(workspace.mixpanel_workspace_id, experiment_id))
    except Exception as exc:
        return PressRead(None, exc)


def attempt_send(
    attempt: ConclusionAttempt, *, client: MixpanelClient, read: PressRead | None = None
) -> AttemptOutcome:
    """Steps 1 to 3 for an attempt whose claim and intent are committed ("requested"): read,
    call once, record the outcome. A press runs them at once; an approval, once the second
    person has approved. `read` is the press's own read, when it made one: step 1 uses it."""
    decision = attempt.action == AttemptAction.DECISION
    workspace, experiment_id = attempt.workspace, attempt.experiment_id
    name = quoted_name(attempt.experiment_name, experiment_id)

    # 1. The read: proves the experiment is this one, in this workspace, and in the right state.
    if read is None:
        read = press_read(workspace=workspace, experiment_id=experiment_id, client=client)
    before = read.experiment
    if before is None:
        exc = read.error or MixpanelError()
        message = _read_failure(exc, attempt)
        return finish_attempt(attempt, AttemptState.FAILED, message, True, failure=failure_of(exc), error=exc)
    problem = _not_decidable(before, attempt, name) if decision else _not_concludable(before, attempt, name)
    if problem:
        return finish_attempt(attempt, AttemptState.FAILED, problem, True, failure=FAILURE_CONFLICT, before=before)

    # 2. The call, once. Whatever it raises is recorded; nothing is retried.
    started = time.monotonic()
    try:
        if decision:
            body = attempt.request_body
            result = client.decide(
                workspace.mixpanel_workspace_id,
                experiment_id,
                success=body["success"],
                variant=body["variant"],
                message=body["message"],
            )
        else:
            result = client.force_conclude(workspace.mixpanel_workspace_id, experiment_id, end_date=attempt.end_date)
    except Exception as exc:
        return _call_raised(attempt, exc, before=before, started=started)

    # 3. An answer came: record what it says.
    return _call_answered(attempt, result, name=name, before=before, started=started)


def failure_of(exc: BaseException) -> str:
    """Why a call that raised failed, as the FAILURE_ words say it."""
    if isinstance(exc, MixpanelNotFound):
        return FAILURE_NOT_FOUND
    if isinstance(exc, MixpanelError) and call_outcome(exc) == metrics.TIMEOUT:
        return FAILURE_TIMEOUT
    return FAILURE_UPSTREAM


def _read_failure(exc: BaseException, attempt: ConclusionAttempt) -> str:
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


def _call_raised(
    attempt: ConclusionAttempt, exc: BaseException, *, before: Experiment, started: float
) -> AttemptOutcome:
    """Record a PUT or PATCH that raised. The client's exception family says whether Mixpanel
    may have applied it (outcome_unknown); anything else we did not expect may have, too."""
    decision = attempt.action == AttemptAction.DECISION
    failed, unknown = (MSG_PATCH_FAILED, MSG_PATCH_UNKNOWN) if decision else (MSG_PUT_FAILED, MSG_PUT_UNKNOWN)
    name = quoted_name(attempt.experiment_name, attempt.experiment_id)
    timing = {"duration_ms": _ms_since(started), "http_status": getattr(exc, "http_status", None)}
    if isinstance(exc, MixpanelError) and not exc.outcome_unknown:
        message = failed.format(name=name, error=exc.message)
        sent = exc.http_status is not None
        failure = failure_of(exc)
        return finish_attempt(
            attempt, AttemptState.FAILED, message, True, before=before, error=exc, sent=sent, failure=failure, **timing
        )
    if not isinstance(exc, MixpanelError):
        log_unexpected(exc, attempt=attempt, step=attempt.action)
    message = unknown.format(name=name, error=audit_payloads.error_data(exc)["message"])
    return finish_attempt(attempt, AttemptState.UNKNOWN, message, False, before=before, error=exc, sent=True, **timing)


def _call_answered(
    attempt: ConclusionAttempt, result: ConcludeResult, *, name: str, before: Experiment, started: float
) -> AttemptOutcome:
    """Record a call that answered. It counts as applied only if the experiment it returns is
    this one and is now concluded (a conclusion) or decided (a decision)."""
    decision = attempt.action == AttemptAction.DECISION
    returned = result.experiment
    evidence = _answer_evidence(result, before=before, started=started)
    if returned.id != attempt.experiment_id:
        other = MSG_PATCH_ANSWERED_OTHER if decision else MSG_PUT_ANSWERED_OTHER
        message = (MSG_PATCH_UNKNOWN if decision else MSG_PUT_UNKNOWN).format(name=name, error=other)
        return finish_attempt(attempt, AttemptState.UNKNOWN, message, False, **evidence)
    landed = returned.status in DECIDED_STATUSES if decision else returned.is_concluded
    if not landed:
        message = (MSG_PATCH_NOT_APPLIED if decision else MSG_PUT_NOT_APPLIED).format(name=name, status=returned.status)
        return finish_attempt(
            attempt, AttemptState.FAILED, message, True, shown=returned, failure=FAILURE_CONFLICT, **evidence
        )
    if decision:
        message = MSG_DECIDED.format(name=name, status=returned.status, what=attempt.decision_words)
    else:
        end = format_utc(returned.end_date or attempt.end_date)
        message = MSG_CONCLUDED.format(name=name, status=returned.status, end=end)
    return finish_attempt(attempt, AttemptState.SUCCEEDED, message, False, shown=returned, **evidence)


def _answer_evidence(result: ConcludeResult, *, before: Experiment, started: float) -> dict[str, Any]:
    """What a call that answered leaves in the trail: the experiment before, and the answer as received."""
    return {
        "before": before,
        "sent": True,
        "http_status": result.http_status,
        "duration_ms": _ms_since(started),
        "response": audit_payloads.answer(
            http_status=result.http_status,
            body=result.raw_body or auditlog.canonical_json(dict(result.experiment.raw)),
            truncated=bool(result.truncated),
            returned=result.experiment,
        ),
    }


def _ms_since(started: float) -> int:
    return round((time.monotonic() - started) * 1000)
