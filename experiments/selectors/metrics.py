"""Reads for /metrics and /readyz/worker: what the database knows about the dashboard's state.

Read when scraped, by indexed queries over what is waiting (never a count of all history):
attempts not yet final, due tasks, workers' heartbeats and notifications still to send.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from django.db.models import Count, Min
from django.tasks import TaskResultStatus
from django.utils import timezone
from django_tasks_db.models import DBTaskResult, get_date_max

from experiments.models import ConclusionAttempt, DeliveryState, NotificationDelivery, WorkerHeartbeat

WAITING_DELIVERY_STATES = frozenset({DeliveryState.PENDING, DeliveryState.FAILED})


@dataclass(frozen=True)
class TaskQueue:
    """The task queue as the worker should see it: what is due, how long the oldest has waited."""

    due: int
    oldest_due_seconds: float | None
    running: int
    failed: int


@dataclass(frozen=True)
class OperationalCounts:
    waiting_attempts: dict[tuple[str, str], int]  # (action, state) -> count, states not final
    oldest_open_attempt_seconds: float | None  # requested or unknown: sent, no answer recorded
    queue: TaskQueue
    heartbeats: dict[str, float] = field(default_factory=dict)  # worker id -> seconds since its beat
    waiting_deliveries: dict[tuple[str, str], int] = field(default_factory=dict)  # (channel, state) -> count


def _seconds_since(moment: dt.datetime | None, now: dt.datetime) -> float | None:
    return None if moment is None else max(0.0, (now - moment).total_seconds())


def task_queue(*, now: dt.datetime | None = None) -> TaskQueue:
    """Due, running and failed tasks, and how long the oldest due one has been due."""
    now = now or timezone.now()
    ready = DBTaskResult.objects.filter(status=TaskResultStatus.READY)
    # A task queued to run at once has the far-future sentinel as run_after: it was due when enqueued.
    due_since = [
        ready.filter(run_after=get_date_max()).aggregate(when=Min("enqueued_at"))["when"],
        ready.filter(run_after__lte=now).aggregate(when=Min("run_after"))["when"],
    ]
    oldest = min((moment for moment in due_since if moment is not None), default=None)
    return TaskQueue(
        due=DBTaskResult.objects.ready().count(),
        oldest_due_seconds=_seconds_since(oldest, now),
        running=DBTaskResult.objects.running().count(),
        failed=DBTaskResult.objects.failed().count(),
    )


def worker_heartbeats(*, now: dt.datetime | None = None) -> dict[str, float]:
    """Seconds since each known worker's last heartbeat."""
    now = now or timezone.now()
    return {
        worker_id: _seconds_since(beat_at, now) or 0.0
        for worker_id, beat_at in WorkerHeartbeat.objects.values_list("worker_id", "beat_at")
    }


def operational_counts() -> OperationalCounts:
    """Everything /metrics reads from the database, at one moment."""
    now = timezone.now()
    attempts = ConclusionAttempt.objects.filter(state__in=ConclusionAttempt.WAITING_STATES)
    waiting = {
        (row["action"], row["state"]): row["n"]
        for row in attempts.values("action", "state").annotate(n=Count("id")).order_by()
    }
    oldest_open = attempts.filter(state__in=ConclusionAttempt.OPEN_STATES).aggregate(when=Min("created_at"))["when"]
    deliveries = NotificationDelivery.objects.filter(state__in=WAITING_DELIVERY_STATES)
    return OperationalCounts(
        waiting_attempts=waiting,
        oldest_open_attempt_seconds=_seconds_since(oldest_open, now),
        queue=task_queue(now=now),
        heartbeats=worker_heartbeats(now=now),
        waiting_deliveries={
            (row["channel"], row["state"]): row["n"]
            for row in deliveries.values("channel", "state").annotate(n=Count("id")).order_by()
        },
    )
