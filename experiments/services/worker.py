"""The task worker's housekeeping: what `manage.py db_worker` does beside running tasks.

A daemon thread in the worker process records the worker's heartbeat every
WORKER_HEARTBEAT_SECONDS, so /readyz/worker and /metrics can tell a live worker from one
that died or hangs; it pushes the audit trail to the SIEM collector when one is set,
hourly forgets the API's Idempotency-Key answers past their day, sweeps up stranded tasks
(and scheduled conclusions whose task was lost),
keeps the workspaces' experiment lists fresh (telling what became owed) and sends the weekly
digest when due. It runs apart from the tasks, so a slow task never stops the beat; a worker
that keeps beating while its tasks pile up is caught by the age of the oldest due task instead.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
import time

from django.conf import settings
from django.db import close_old_connections, connection
from django.tasks import TaskResultStatus
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from experiments.models import WorkerHeartbeat
from experiments.notifications import siem
from experiments.notifications.deliveries import deliveries_recover_stranded
from experiments.services.digest import digest_send_if_due
from experiments.services.idempotency import idempotency_prune
from experiments.services.list_refresh import lists_keep_fresh
from experiments.services.schedules import schedules_requeue_lost

logger = logging.getLogger(__name__)

# Heartbeats of workers gone this long are dropped, so the metrics list only recent workers.
HEARTBEAT_KEPT = dt.timedelta(days=1)
# How often the answers kept for Idempotency-Keys past their 24 hours are forgotten.
PRUNE_EVERY_SECONDS = 3600
# How often a worker sweeps for stranded tasks and deliveries.
SWEEP_SECONDS = 30.0
# A task whose worker was lost this many times is not run again: it fails, saying so.
MAX_RUNS = 5
MSG_RUNS_LOST = "Its worker stopped (or ran past WORKER_TASK_LIMIT_SECONDS) in each of {runs} runs; not run again."


def worker_beat(*, worker_id: str, started_at: dt.datetime) -> None:
    """Record that worker `worker_id` (this process) is alive now, and forget long-gone workers."""
    now = timezone.now()
    WorkerHeartbeat.objects.update_or_create(
        worker_id=worker_id,
        defaults={"hostname": socket.gethostname()[:255], "pid": os.getpid(), "started_at": started_at, "beat_at": now},
    )
    WorkerHeartbeat.objects.filter(beat_at__lt=now - HEARTBEAT_KEPT).delete()


def tasks_requeue_stranded() -> int:
    """Put back on the queue each task left running by a worker that can no longer finish it;
    returns how many.

    Stranded: its worker's heartbeat is older than WORKER_STALE_SECONDS (with no heartbeat at
    all, a worker without housekeeping, such as a --batch run, counts as gone once the task has
    run that long), or it has run for longer than WORKER_TASK_LIMIT_SECONDS. A task lost
    MAX_RUNS times fails instead, so one that kills its worker cannot do so for ever. Each is
    a compare-and-set on the row as read: two workers sweeping at once move it once.
    """
    now = timezone.now()
    stale = now - dt.timedelta(seconds=settings.WORKER_STALE_SECONDS)
    limit = now - dt.timedelta(seconds=settings.WORKER_TASK_LIMIT_SECONDS)
    running = list(
        DBTaskResult.objects.filter(status=TaskResultStatus.RUNNING).values_list(
            "id", "task_path", "worker_ids", "started_at", named=True
        )
    )
    workers = {row.worker_ids[-1] for row in running if row.worker_ids}
    beats = dict(WorkerHeartbeat.objects.filter(worker_id__in=workers).values_list("worker_id", "beat_at"))
    moved = 0
    for row in running:
        worker = row.worker_ids[-1] if row.worker_ids else ""
        beat = beats.get(worker)
        lost = beat < stale if beat is not None else row.started_at < stale
        if not (lost or row.started_at < limit):
            continue
        same_run = DBTaskResult.objects.filter(pk=row.id, status=TaskResultStatus.RUNNING, started_at=row.started_at)
        if len(row.worker_ids) >= MAX_RUNS:
            failed = same_run.update(
                status=TaskResultStatus.FAILED,
                finished_at=now,
                exception_class_path=f"{__name__}.WorkerLost",
                traceback=MSG_RUNS_LOST.format(runs=len(row.worker_ids)),
            )
            if failed:
                logger.error("Task %s (%s) failed: %s", row.id, row.task_path, MSG_RUNS_LOST.format(runs=MAX_RUNS))
            continue
        if same_run.update(status=TaskResultStatus.READY):
            moved += 1
            why = (
                f"worker {worker} stopped beating" if lost else f"it ran past {settings.WORKER_TASK_LIMIT_SECONDS:g} s"
            )
            logger.warning("Task %s (%s) went back to the queue: %s.", row.id, row.task_path, why)
    return moved


class Housekeeping(threading.Thread):
    """The worker's housekeeping thread: beats until stop()."""

    def __init__(self, *, worker_id: str) -> None:
        super().__init__(name="worker-housekeeping", daemon=True)
        self.worker_id = worker_id
        self.started_at = timezone.now()
        self._stopped = threading.Event()
        self._next_prune = 0.0
        self._next_sweep = 0.0  # the first tick sweeps

    def run(self) -> None:
        try:
            while not self._stopped.is_set():
                # A connection the database dropped since the last round is replaced, not reused.
                close_old_connections()
                self.tick()
                self._stopped.wait(settings.WORKER_HEARTBEAT_SECONDS)
        finally:
            connection.close()

    def tick(self) -> None:
        """One round of housekeeping. A failure (the database away for a moment) is logged and
        the next round tries again: the thread never dies of it."""
        try:
            worker_beat(worker_id=self.worker_id, started_at=self.started_at)
        except Exception:
            logger.exception("Worker housekeeping: could not record the heartbeat of %s.", self.worker_id)
        try:
            siem.audit_stream_push()
        except Exception:
            logger.exception("Worker housekeeping: could not push the audit trail to the SIEM collector.")
        if time.monotonic() >= self._next_prune:
            self._next_prune = time.monotonic() + PRUNE_EVERY_SECONDS
            try:
                idempotency_prune()
            except Exception:
                logger.exception("Worker housekeeping: could not forget old Idempotency-Key answers.")
        self.keep_owed()
        if time.monotonic() < self._next_sweep:
            return
        self._next_sweep = time.monotonic() + SWEEP_SECONDS
        for sweep in (tasks_requeue_stranded, deliveries_recover_stranded, schedules_requeue_lost):
            try:
                sweep()
            except Exception:
                logger.exception("Worker housekeeping: %s failed; the next sweep tries again.", sweep.__name__)

    def keep_owed(self) -> None:
        """Lists read again before they expire, reminders of what became owed, the weekly digest."""
        try:
            lists_keep_fresh()
        except Exception:
            logger.exception("Worker housekeeping: could not keep the experiment lists fresh.")
        try:
            digest_send_if_due()
        except Exception:
            logger.exception("Worker housekeeping: could not send the weekly digest.")

    def stop(self) -> None:
        self._stopped.set()
