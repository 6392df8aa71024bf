"""Which audit entries become messages, to which places, and sending each one once.

Two steps, in the order a message lives:
  1. `entry_recorded` is called for every audit entry of an attempt, in the entry's
     transaction. For an entry worth telling (NOTIFIED_KINDS) in a workspace that has a
     webhook or e-mail turned on, it writes one NotificationDelivery per place (the
     message rendered once, here) and queues a `deliver_notification` task for each,
     inside a savepoint: if anything about it fails, the failure is logged and the
     entry, the outcome and the rest of their transaction commit as if notifications did
     not exist. With notifications off it runs no query at all.
  2. `delivery_send` (the task, in the notifications worker) claims one delivery
     ("sending"), sends it outside any transaction, then records how it went: sent, failed
     (tried again later, doubling the wait) or, after NOTIFY_MAX_TRIES, gave up. Nothing
     here ever writes to the attempt or its entries.
  3. `deliveries_recover_stranded` (the workers' housekeeping) gives a delivery whose task
     ended without recording it a new try, so none stays pending past its retry plan.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from django.conf import settings
from django.db import transaction
from django.tasks import TaskContext, TaskResultStatus, task
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from experiments import metrics
from experiments.models import (
    APPROVAL_KINDS,
    OUTCOME_KINDS,
    AuditEntry,
    ConclusionAttempt,
    DeliveryChannel,
    DeliveryState,
    EntryKind,
    NotificationDelivery,
    Workspace,
)
from experiments.notifications import email, webhook
from experiments.notifications.messages import notification_message
from experiments.observability import log_context

logger = logging.getLogger(__name__)

RESULT_TAKEN_OVER = "taken over"
# At most this many stranded deliveries are recovered in one round; the next round takes the rest.
STRANDED_BATCH = 100
# What the delivery log says of a try whose worker stopped before recording it.
MSG_WORKER_LOST = "the worker stopped before this try was finished"

# Not told: a "requested" entry (its outcome follows), a late answer (it changes nothing),
# a bookmark. A refused press (a second click) is an outcome entry that is skipped too:
# see _refused_press. A settings change is told when it loosens governance: see _worth_telling.
# A test message goes the same way as every other, so it proves that way works.
# A decision owed is told once per state (services.owed), and the weekly digest once a week
# (services.digest); both are about the workspace rather than an attempt.
NOTIFIED_KINDS = OUTCOME_KINDS | APPROVAL_KINDS | {EntryKind.SETTINGS_CHANGED, EntryKind.NOTIFICATION_TEST}
NOTIFIED_KINDS |= {EntryKind.EXPERIMENT_OWED, EntryKind.OWED_DIGEST}
# Entries about the workspace that go by e-mail only where the workspace turned e-mail on
# (a governance change always reaches its admins), and the one that never does: each person
# gets a digest of their own (services.digest).
EMAIL_IF_ON_KINDS = frozenset({EntryKind.NOTIFICATION_TEST, EntryKind.EXPERIMENT_OWED})


# --- Which entries, to whom --------------------------------------------------------------


def entry_recorded(*, entry: AuditEntry, attempt: ConclusionAttempt | None = None) -> list[NotificationDelivery]:
    """Queue the messages about `entry`, an audit entry just appended: one of `attempt`'s, or
    (with no attempt) one about its workspace; returns the deliveries written.

    Called in the entry's transaction. Does nothing, without a query, for an entry that is
    not told or an attempt's entry in a workspace with neither a webhook nor e-mail on.
    Otherwise writes the deliveries and their tasks in a savepoint; any failure there is
    logged and swallowed, so the entry and what it records commit regardless.
    """
    if entry.kind not in NOTIFIED_KINDS:
        return []
    workspace = attempt.workspace if attempt is not None else entry.workspace  # loaded: no query
    if attempt is not None and not (workspace.webhook_url_sealed or workspace.email_bookmarkers):
        return []
    if not _worth_telling(entry, attempt):
        return []
    try:
        with transaction.atomic():
            deliveries = NotificationDelivery.objects.bulk_create(_deliveries(entry, attempt, workspace))
            for delivery in deliveries:
                deliver_notification_later(delivery_id=delivery.pk)
    except Exception:
        # Never the outcome's problem: it is recorded whatever happens here.
        logger.exception(
            "Could not queue the notifications about entry #%s (%s) of attempt #%s; the entry is recorded.",
            entry.seq,
            entry.kind,
            attempt.pk if attempt is not None else None,
        )
        return []
    return deliveries


def _worth_telling(entry: AuditEntry, attempt: ConclusionAttempt | None) -> bool:
    """Whether a notified kind of entry is told this time. A press refused because another
    attempt held the claim is not: it sent nothing and changed nothing, and the attempt that
    did will be told about. A settings change is told when it loosens governance (approval
    turned off, its window shortened, the webhook removed), so one admin cannot quietly do so."""
    if entry.kind == EntryKind.SETTINGS_CHANGED:
        return bool(entry.payload_data.get("loosened"))
    if entry.kind in OUTCOME_KINDS and attempt is not None:
        return not (attempt.is_refused_press or entry.payload_data.get("blocked_by_attempt") is not None)
    return True


def _deliveries(
    entry: AuditEntry, attempt: ConclusionAttempt | None, workspace: Workspace
) -> list[NotificationDelivery]:
    message = notification_message(entry=entry, attempt=attempt)
    now = timezone.now()
    common = {"workspace": workspace, "entry": entry, "attempt": attempt, "created_at": now, "updated_at": now}
    deliveries = []
    if workspace.webhook_url_sealed:
        deliveries.append(
            NotificationDelivery(
                **common,
                channel=DeliveryChannel.WEBHOOK,
                recipient=workspace.webhook_url_hint[:254],
                subject=message.subject,
                body=webhook.webhook_text(message.subject, message.body),
            )
        )
    # An attempt's news, a test and a reminder go by e-mail where the workspace turned it on;
    # news about the workspace's own governance always goes to its admins.
    governance = attempt is None and entry.kind not in EMAIL_IF_ON_KINDS
    if entry.kind != EntryKind.OWED_DIGEST and (workspace.email_bookmarkers or governance):
        deliveries.extend(
            NotificationDelivery(
                **common, channel=DeliveryChannel.EMAIL, recipient=address, subject=message.subject, body=message.body
            )
            for address in email.email_recipients(entry=entry, attempt=attempt, workspace=workspace)
        )
    return deliveries


# --- Sending one delivery (the task's work) ----------------------------------------------


def retry_delay(tries: int) -> dt.timedelta:
    """How long to wait after `tries` failed tries (1, 2, ...): the base, doubling."""
    return dt.timedelta(seconds=settings.NOTIFY_BACKOFF_SECONDS * 2 ** (tries - 1))


def deliver_notification_later(*, delivery_id: int, run_after: dt.datetime | None = None) -> None:
    """Queue the sending of one notification delivery, now or no sooner than `run_after`.

    Called inside the transaction that wrote the delivery (or its failed try), so the
    worker finds the row, and a row that rolled back leaves no task behind.
    """
    queued = deliver_notification if run_after is None else deliver_notification.using(run_after=run_after)
    queued.enqueue(delivery_id)


# Deliveries wait on other people's servers: on a queue of their own, with a worker of their
# own, they never stand between a reconcile or an approval expiry and the default worker.
QUEUE = "notifications"
# Where the queue finds this task, now and before it moved here (experiments.tasks).
TASK_PATHS = (
    "experiments.notifications.deliveries.deliver_notification",
    "experiments.tasks.deliver_notification",
)


@task(queue_name=QUEUE, takes_context=True)
def deliver_notification(context: TaskContext, delivery_id: int) -> str:
    """Send one notification (a webhook post or an e-mail) and record how it went.

    Returns the delivery's new state, kept in the task's result row: "sent", "failed",
    "gave_up", "already <state>", "taken over" or "missing". Never touches the attempt the
    message is about. A second run of this same task means the first was cut off (its
    worker died, or it ran too long and the worker's sweep put it back on the queue): the
    try it left "sending" is this run's to finish.
    """
    return delivery_send(delivery_id=delivery_id, resumed=context.attempt > 1)


def delivery_send(*, delivery_id: int, resumed: bool = False) -> str:
    """Send one delivery, then record how it went; returns the new state (or why nothing was done).

    The delivery is first claimed ("sending", a compare-and-set), so two runs never send it at
    once; one that finds it being sent leaves it, unless it is `resumed` (the run that claimed
    it was cut off). The message goes out with no transaction open; its outcome is written
    after, only while the claim is still this run's. A failure is tried again after
    retry_delay, up to NOTIFY_MAX_TRIES tries in all; an address that cannot be read or a
    webhook that was removed gives up at once.
    """
    delivery = NotificationDelivery.objects.select_related("workspace").filter(pk=delivery_id).first()
    if delivery is None:
        return "missing"
    if delivery.state in (DeliveryState.SENT, DeliveryState.GAVE_UP):
        return f"already {delivery.state}"
    if delivery.state == DeliveryState.SENDING and not resumed:
        return f"already {delivery.state}"
    claimed_at = timezone.now()
    seen = {"state": delivery.state, "tries": delivery.tries, "updated_at": delivery.updated_at}
    if not NotificationDelivery.objects.filter(pk=delivery.pk, **seen).update(
        state=DeliveryState.SENDING, updated_at=claimed_at
    ):
        return "already " + NotificationDelivery.objects.get(pk=delivery.pk).state
    with log_context(attempt_id=delivery.attempt_id, workspace=delivery.workspace.pk):
        if delivery.channel == DeliveryChannel.WEBHOOK:
            error, may_retry = _send_webhook(delivery)
        else:
            error, may_retry = email.send(subject=delivery.subject, body=delivery.body, to=delivery.recipient)
        return _record_try(
            delivery, error, may_retry=may_retry, claim={"state": DeliveryState.SENDING, "updated_at": claimed_at}
        )


def _send_webhook(delivery: NotificationDelivery) -> tuple[str, bool]:
    workspace = delivery.workspace
    # The workspace's current webhook: an admin who fixed a broken address sees the
    # waiting messages go to the new one.
    if workspace.webhook_url_sealed and delivery.recipient != workspace.webhook_url_hint[:254]:
        delivery.recipient = workspace.webhook_url_hint[:254]
        NotificationDelivery.objects.filter(pk=delivery.pk).update(recipient=delivery.recipient)
    # After a key rotation, the first message sent moves the seal to the current key, so the
    # old key can leave SECRET_KEY_FALLBACKS without making the webhook unreadable.
    webhook.webhook_reseal_saved(workspace=workspace)
    return webhook.send(sealed=workspace.webhook_url_sealed, text=delivery.body)


def _record_try(delivery: NotificationDelivery, error: str, *, may_retry: bool, claim: dict[str, Any]) -> str:
    """Write how one try went, and queue the next one, if the delivery is still as `claim` says
    (else another run took it over, and its outcome is the one that counts)."""
    now = timezone.now()
    tries = delivery.tries + 1
    if not error:
        state = DeliveryState.SENT
    elif may_retry and tries < settings.NOTIFY_MAX_TRIES:
        state = DeliveryState.FAILED
    else:
        state = DeliveryState.GAVE_UP
    columns: dict[str, Any] = {"state": state, "tries": tries, "last_error": error[:500], "updated_at": now}
    if state == DeliveryState.SENT:
        columns["sent_at"] = now
    with transaction.atomic():
        if not NotificationDelivery.objects.filter(pk=delivery.pk, **claim).update(**columns):
            logger.warning(
                "Notification #%s: another run took this try over; this run's outcome is not recorded.", delivery.pk
            )
            return RESULT_TAKEN_OVER
        if state == DeliveryState.FAILED:
            deliver_notification_later(delivery_id=delivery.pk, run_after=now + retry_delay(tries))
    metrics.notification_tries_total.labels(delivery.channel, state).inc()
    where = f"{delivery.get_channel_display()} to {delivery.recipient}"
    if state == DeliveryState.SENT:
        logger.info("Notification #%s sent (%s, try %s).", delivery.pk, where, tries)
    elif state == DeliveryState.FAILED:
        logger.warning(
            "Notification #%s failed (%s, try %s of %s): %s; trying again in %s.",
            delivery.pk,
            where,
            tries,
            settings.NOTIFY_MAX_TRIES,
            error,
            retry_delay(tries),
        )
    else:
        logger.warning("Notification #%s gave up (%s) after %s tries: %s", delivery.pk, where, tries, error)
    return state


# --- Deliveries nothing is moving on any more (the worker's housekeeping) ----------------------


def deliveries_recover_stranded() -> int:
    """Give each unfinished delivery whose task is gone another task, as a failed try (or give it
    up when its tries are spent); returns how many.

    A task can end without recording its delivery: it failed with an error (the database
    away as it finished), or its worker died again and again until the sweep failed it for
    good. Such a delivery, with no task waiting or running for it and untouched for longer
    than its next wait plus WORKER_STALE_SECONDS, would otherwise stay pending for ever; this
    keeps it within its retry plan. Each one is a compare-and-set on what was read.
    """
    now = timezone.now()
    grace = dt.timedelta(seconds=settings.WORKER_STALE_SECONDS)
    unfinished = NotificationDelivery.objects.exclude(state__in=[DeliveryState.SENT, DeliveryState.GAVE_UP])
    recovered = 0
    # delivery_open_idx serves this: unfinished deliveries by when they last moved.
    for delivery in unfinished.filter(updated_at__lt=now - grace).order_by("updated_at")[:STRANDED_BATCH]:
        waits = retry_delay(delivery.tries) if delivery.state == DeliveryState.FAILED else dt.timedelta(0)
        if delivery.updated_at + waits + grace > now or _has_live_task(delivery.pk):
            continue
        seen = {"state": delivery.state, "tries": delivery.tries, "updated_at": delivery.updated_at}
        if _record_try(delivery, MSG_WORKER_LOST, may_retry=True, claim=seen) != RESULT_TAKEN_OVER:
            recovered += 1
    return recovered


def _has_live_task(delivery_id: int) -> bool:
    """Whether a task waits or runs for this delivery (so it is on its way, however slowly)."""
    live = DBTaskResult.objects.filter(
        task_path__in=TASK_PATHS, status__in=[TaskResultStatus.READY, TaskResultStatus.RUNNING]
    )
    return live.filter(args_kwargs__args__0=delivery_id).exists()
