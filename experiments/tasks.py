"""Background tasks, run by `manage.py db_worker` (django-tasks-db: the database is the queue).

Three kinds: reconciling an open attempt, closing a request for approval whose window
ended, and delivering one notification.

The reconcile task resolves one force-conclude attempt left open by reading its
experiment from Mixpanel, exactly as `reconcile_conclusions` does (it calls the same
service function), so the two never disagree. The task is the quick path, enqueued
for one attempt; the command, run from cron, stays the safety net for anything the
task gave up on or never got (a worker that was down, a queue row lost).
"""

from __future__ import annotations

import datetime as dt
import logging

from django.conf import settings
from django.tasks import task
from django.utils import timezone

from experiments.mixpanel import client as mixpanel
from experiments.mixpanel.errors import MixpanelError
from experiments.models import AttemptState, ConclusionAttempt
from experiments.observability import log_context
from experiments.services import conclusions as conclusion_services
from experiments.services import notifications as notification_services
from experiments.services import reconcile as reconcile_services

logger = logging.getLogger(__name__)

# States a reconcile can still change; every other state is final.
OPEN_STATES = frozenset({AttemptState.REQUESTED, AttemptState.UNKNOWN})

# ReconcileResult.outcome for an attempt whose PUT may still be in flight.
TOO_EARLY = "too_early"

RESULT_MISSING = "missing"
RESULT_RETRY = "retry scheduled"
RESULT_TOO_EARLY = "waiting until its PUT cannot be in flight"
RESULT_NOT_DUE = "waiting until its window ends"
RESULT_GAVE_UP = "left for reconcile_conclusions"


def reconcile_attempt_later(*, attempt_id: int, run_after: dt.datetime, try_number: int = 1) -> None:
    """Queue a reconcile of one attempt, to run no sooner than `run_after`."""
    reconcile_attempt.using(run_after=run_after).enqueue(attempt_id, try_number)


def reconcile_attempt_when_judgeable(*, attempt: ConclusionAttempt) -> None:
    """Queue a reconcile of `attempt` for the moment its PUT cannot still be in flight.

    Enqueue it once the attempt is committed (transaction.on_commit), so the worker
    finds the row it is asked about.
    """
    reconcile_attempt_later(attempt_id=attempt.pk, run_after=reconcile_services.attempt_judgeable_at(attempt))


def retry_delay(try_number: int) -> dt.timedelta:
    """How long to wait after failed try `try_number` (1, 2, ...): the base, doubling."""
    return dt.timedelta(seconds=settings.RECONCILE_TASK_BACKOFF_SECONDS * 2 ** (try_number - 1))


def expire_request_when_due(*, attempt: ConclusionAttempt) -> None:
    """Queue the closing of a request for approval for the moment its window ends."""
    expire_request.using(run_after=attempt.expires_at).enqueue(attempt.pk)


@task()
def expire_request(attempt_id: int) -> str:
    """Close a request for approval that nobody approved or rejected within its window.

    Does nothing to a request already approved, rejected or expired (the usual case);
    one whose window has not quite ended (a clock ahead of this one) is looked at again
    when it has. Nothing is ever sent. Returns what it did: "expired", "already
    <state>", "missing" or RESULT_NOT_DUE.
    """
    with log_context(attempt_id=attempt_id):
        attempt = ConclusionAttempt.objects.select_related("workspace").filter(pk=attempt_id).first()
        if attempt is None:
            return RESULT_MISSING
        if attempt.state != AttemptState.AWAITING_APPROVAL:
            return f"already {attempt.state}"
        if not conclusion_services.request_overdue(attempt):
            expire_request_when_due(attempt=attempt)
            return RESULT_NOT_DUE
        if conclusion_services.approval_lapse(attempt):
            logger.info("Approval task: request #%s expired unapproved; nothing was sent.", attempt_id)
            return "expired"
        return f"already {attempt.state}"


@task()
def reconcile_attempt(attempt_id: int, try_number: int = 1) -> str:
    """Resolve one open attempt by reading its experiment; never sends the PUT again.

    An attempt already final (or gone) is left alone; one whose PUT may still be in
    flight is looked at again once it cannot be. When the attempt cannot be
    resolved yet (Mixpanel unreachable, or an answer the reconcile rule will not
    judge), the task queues itself again after a doubling delay, up to
    RECONCILE_TASK_MAX_TRIES tries in all, then logs and leaves the attempt to the
    cron safety net. Returns what it did, kept in the task's result row: the
    reconcile outcome, "already <state>", "missing", RESULT_TOO_EARLY, "retry
    scheduled" or "left for reconcile_conclusions".
    """
    with log_context(attempt_id=attempt_id):
        attempt = ConclusionAttempt.objects.select_related("workspace").filter(pk=attempt_id).first()
        if attempt is None:
            logger.warning("Reconcile task: attempt #%s does not exist; nothing to do.", attempt_id)
            return RESULT_MISSING
        if attempt.state not in OPEN_STATES:
            return f"already {attempt.state}"
        try:
            client = mixpanel.client_for(attempt.workspace)
        except MixpanelError as exc:
            why = exc.message
        else:
            result = reconcile_services.conclusion_reconcile(attempt=attempt, client=client)
            if result.resolved:
                logger.info("Reconcile task: attempt #%s %s. %s", attempt_id, result.outcome, result.message)
                return result.outcome
            if result.outcome == TOO_EARLY:
                # Not a failed try: come back when the service will judge it.
                when = reconcile_services.attempt_judgeable_at(attempt)
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


def deliver_notification_later(*, delivery_id: int, run_after: dt.datetime | None = None) -> None:
    """Queue the sending of one notification delivery, now or no sooner than `run_after`.

    Called inside the transaction that wrote the delivery (or its failed try), so the
    worker finds the row, and a row that rolled back leaves no task behind.
    """
    queued = deliver_notification if run_after is None else deliver_notification.using(run_after=run_after)
    queued.enqueue(delivery_id)


@task()
def deliver_notification(delivery_id: int) -> str:
    """Send one notification (a webhook post or an email) and record how it went.

    A failed try queues the next one itself, after a doubling delay, up to
    NOTIFY_MAX_TRIES tries (see notifications.delivery_send). Returns the delivery's
    new state, kept in the task's result row: "sent", "failed", "gave_up", "already
    <state>" or "missing". Never touches the attempt the message is about.
    """
    return notification_services.delivery_send(delivery_id=delivery_id)
