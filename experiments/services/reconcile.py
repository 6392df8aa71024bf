"""Reconciling open attempts, conclusions and decisions alike, by reading Mixpanel only.

An attempt left "requested" (the process died between intent and outcome) or "unknown"
(sent, no trustworthy answer) is resolved by READING its experiment; the request is never
sent again. Each resolution is a new audit entry saying why.

Three callers share `conclusion_reconcile`, so they never disagree: the `reconcile_attempt`
task (queued with every attempt that may be sent, for the moment its call cannot still
be in flight), "Check Mixpanel now" on the page, and the reconcile_conclusions command
(the cron safety net for anything the task gave up on or never got).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.tasks import task
from django.utils import timezone

from experiments import audit_payloads
from experiments.mixpanel import client as mixpanel
from experiments.mixpanel.errors import MixpanelError
from experiments.mixpanel.experiment import CONCLUDED_STATUSES, DECIDED_STATUSES
from experiments.models import AttemptAction, ConclusionAttempt
from experiments.observability import log_context
from experiments.services.attempts import attempt_record_reconciled, log_unexpected, quoted_name

logger = logging.getLogger(__name__)

# Beyond the client's deadlines, the time an attempt's own transactions take and the
# clock difference between the server that pressed and the one that reconciles.
IN_FLIGHT_MARGIN = dt.timedelta(seconds=30)

# Per action, the statuses that say its request landed, and those that say it did not:
# a conclusion did not land while the experiment still runs (or never started); a
# decision did not land while the experiment is still only concluded.
NOT_CONCLUDED_STATUSES = frozenset({"active", "draft"})
LANDED_STATUSES = {
    AttemptAction.CONCLUSION: (CONCLUDED_STATUSES, NOT_CONCLUDED_STATUSES),
    AttemptAction.DECISION: (DECIDED_STATUSES, frozenset({"concluded"})),
}
ACTION_NOUNS = {AttemptAction.CONCLUSION: "force conclude", AttemptAction.DECISION: "decision"}

APPLIED = "applied"
NOT_APPLIED = "not_applied"
UNRESOLVED = "unresolved"
TOO_EARLY = "too_early"
SKIPPED = "skipped"

MSG_RECONCILED_APPLIED = "Mixpanel shows {name} as {status}: the {action} was applied."
MSG_RECONCILED_NOT_APPLIED = (
    "Mixpanel shows {name} as still {status}: the {action} was not applied. "
    "Nothing was changed, so it may be tried again."
)
MSG_RECONCILE_READ_FAILED = "Could not read {name} from Mixpanel ({error}); left open, run again later."
MSG_RECONCILE_ODD = "Mixpanel shows {name} with status {status!r}; left open for a person to check."
MSG_RECONCILE_WRONG = "Mixpanel answered for a different experiment than {name}; left open for a person to check."
MSG_RECONCILE_DONE = "Already resolved ({state}); nothing to do."
MSG_RECONCILE_TOO_EARLY = "Its request may still be in flight until {when}; left open until then."

# What the task did, kept in its result row.
RESULT_MISSING = "missing"
RESULT_RETRY = "retry scheduled"
RESULT_TOO_EARLY = "waiting until its PUT cannot be in flight"
RESULT_GAVE_UP = "left for reconcile_conclusions"


def in_flight_limit() -> dt.timedelta:
    """The longest an attempt's requests can still be on their way after it was recorded:
    the read's deadline, then the call's, plus a margin."""
    seconds = mixpanel.read_deadline_seconds() + mixpanel.write_deadline_seconds()
    return dt.timedelta(seconds=seconds) + IN_FLIGHT_MARGIN


def attempt_judgeable_at(attempt: ConclusionAttempt) -> dt.datetime:
    """When reconciling may first judge `attempt`: once no call of it can still be in flight.

    Reading the experiment earlier could see it "active" while our own PUT is about to
    land, and release the claim for a second PUT. An approved request's call follows its
    approval, not its asking.
    """
    return (attempt.reviewed_at or attempt.created_at) + in_flight_limit()


@dataclass(frozen=True)
class ReconcileResult:
    """What reconciling one attempt did. `outcome` is APPLIED, NOT_APPLIED, UNRESOLVED (left
    open, see message), TOO_EARLY (its call may still be in flight) or SKIPPED (already resolved)."""

    attempt: ConclusionAttempt
    outcome: str
    previous_state: str
    upstream_status: str | None
    message: str

    @property
    def resolved(self) -> bool:
        return self.outcome in (APPLIED, NOT_APPLIED, SKIPPED)


def conclusion_reconcile(
    *, attempt: ConclusionAttempt, client: mixpanel.MixpanelClient, by: Any = None
) -> ReconcileResult:
    """Resolve one open attempt (a conclusion or a decision) by reading its experiment.

    A conclusion counts as applied when Mixpanel shows concluded, success or fail (the
    claim stays), and as not applied while it is still active or draft (the claim is
    released). A decision counts as applied at success or fail, and as not applied while
    the experiment is still only concluded. A read failure or an unexpected status leaves
    the attempt open, and so does an attempt younger than attempt_judgeable_at, whatever
    the caller asked. Never sends the request again. `by` is the person who asked ("Check
    Mixpanel now"), recorded as the resolution's actor; the worker and cron leave it None and
    the entry is the reconcile command's.
    """
    name = quoted_name(attempt.experiment_name, attempt.experiment_id)
    previous = attempt.state
    if not attempt.is_open:
        return ReconcileResult(attempt, SKIPPED, previous, None, MSG_RECONCILE_DONE.format(state=previous))
    judgeable_at = attempt_judgeable_at(attempt)
    if timezone.now() < judgeable_at:
        message = MSG_RECONCILE_TOO_EARLY.format(when=judgeable_at.astimezone(dt.UTC).isoformat(timespec="seconds"))
        return ReconcileResult(attempt, TOO_EARLY, previous, None, message)
    try:
        current = client.get_experiment(attempt.workspace.mixpanel_workspace_id, attempt.experiment_id)
    except Exception as exc:
        if not isinstance(exc, MixpanelError):
            log_unexpected(exc, attempt=attempt, step="reconcile read")
        message = MSG_RECONCILE_READ_FAILED.format(name=name, error=audit_payloads.error_data(exc)["message"])
        return ReconcileResult(attempt, UNRESOLVED, previous, None, message)
    if current.id != attempt.experiment_id:
        return ReconcileResult(attempt, UNRESOLVED, previous, current.status, MSG_RECONCILE_WRONG.format(name=name))
    landed, not_landed = LANDED_STATUSES[attempt.action]
    if current.status in landed:
        outcome, message = APPLIED, MSG_RECONCILED_APPLIED
    elif current.status in not_landed:
        outcome, message = NOT_APPLIED, MSG_RECONCILED_NOT_APPLIED
    else:
        message = MSG_RECONCILE_ODD.format(name=name, status=current.status)
        return ReconcileResult(attempt, UNRESOLVED, previous, current.status, message)
    message = message.format(name=name, status=current.status, action=ACTION_NOUNS[attempt.action])
    applied = outcome == APPLIED
    if not attempt_record_reconciled(attempt=attempt, applied=applied, message=message, current=current, by=by):
        done = MSG_RECONCILE_DONE.format(state=attempt.state)
        return ReconcileResult(attempt, SKIPPED, previous, current.status, done)
    return ReconcileResult(attempt, outcome, previous, current.status, message)


# --- The task ----------------------------------------------------------------------------


def reconcile_attempt_later(*, attempt_id: int, run_after: dt.datetime, try_number: int = 1) -> None:
    """Queue a reconcile of one attempt, to run no sooner than `run_after`."""
    reconcile_attempt.using(run_after=run_after).enqueue(attempt_id, try_number)


def reconcile_attempt_when_judgeable(attempt: ConclusionAttempt) -> None:
    """Queue a reconcile of `attempt` for the moment its call cannot still be in flight.

    Called in the transaction that records the attempt (the queue is this database), so
    no attempt that may be sent is ever left with nothing to resolve it: if the process
    dies before the outcome, or the outcome is unknown, the worker reads the experiment.
    An attempt that got its outcome is final by then, and the task does nothing.
    """
    reconcile_attempt_later(attempt_id=attempt.pk, run_after=attempt_judgeable_at(attempt))


def retry_delay(try_number: int) -> dt.timedelta:
    """How long to wait after failed try `try_number` (1, 2, ...): the base, doubling."""
    return dt.timedelta(seconds=settings.RECONCILE_TASK_BACKOFF_SECONDS * 2 ** (try_number - 1))


@task()
def reconcile_attempt(attempt_id: int, try_number: int = 1) -> str:
    """Resolve one open attempt by reading its experiment; never sends its call again.

    An attempt already final (or gone) is left alone; one whose call may still be in
    flight is looked at again once it cannot be. When the attempt cannot be resolved yet
    (Mixpanel unreachable, or an answer the reconcile rule will not judge), the task
    queues itself again after a doubling delay, up to RECONCILE_TASK_MAX_TRIES tries in
    all, then logs and leaves the attempt to the cron safety net. Returns what it did,
    kept in the task's result row: the reconcile outcome, "already <state>", "missing",
    RESULT_TOO_EARLY, RESULT_RETRY or RESULT_GAVE_UP.
    """
    with log_context(attempt_id=attempt_id):
        attempt = ConclusionAttempt.objects.select_related("workspace").filter(pk=attempt_id).first()
        if attempt is None:
            logger.warning("Reconcile task: attempt #%s does not exist; nothing to do.", attempt_id)
            return RESULT_MISSING
        if not attempt.is_open:
            return f"already {attempt.state}"
        try:
            client = mixpanel.client_for(attempt.workspace)
        except MixpanelError as exc:
            why = exc.message
        else:
            result = conclusion_reconcile(attempt=attempt, client=client)
            if result.resolved:
                logger.info("Reconcile task: attempt #%s %s. %s", attempt_id, result.outcome, result.message)
                return result.outcome
            if result.outcome == TOO_EARLY:
                # Not a failed try: come back when the service will judge it.
                when = attempt_judgeable_at(attempt)
                reconcile_attempt_later(attempt_id=attempt_id, run_after=when, try_number=try_number)
                return RESULT_TOO_EARLY
            why = result.message
        if try_number >= settings.RECONCILE_TASK_MAX_TRIES:
            logger.warning(
                "Reconcile task: attempt #%s still open after %s tries (%s); reconcile_conclusions will pick it up.",
                attempt_id,
                try_number,
                why,
            )
            return RESULT_GAVE_UP
        delay = retry_delay(try_number)
        logger.info("Reconcile task: attempt #%s left open (%s); trying again in %s.", attempt_id, why, delay)
        reconcile_attempt_later(attempt_id=attempt_id, run_after=timezone.now() + delay, try_number=try_number + 1)
        return RESULT_RETRY
