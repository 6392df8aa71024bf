"""The task worker's housekeeping: what `manage.py db_worker` does beside running tasks.

A daemon thread in the worker process records the worker's heartbeat every
WORKER_HEARTBEAT_SECONDS, so /readyz/worker and /metrics can tell a live worker from one
that died or hangs; it pushes the audit trail to the SIEM collector when one is set,
hourly forgets the API's Idempotency-Key answers past their day, keeps the workspaces'
experiment lists fresh (telling what became owed) and sends the weekly digest when due.
It runs apart from the tasks, so a slow task never stops the beat; a worker that keeps
beating while its tasks pile up is caught by the age of the oldest due task instead.
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
from django.utils import timezone

from experiments.models import WorkerHeartbeat
from experiments.notifications import siem
from experiments.services.digest import digest_send_if_due
from experiments.services.idempotency import idempotency_prune
from experiments.services.list_refresh import lists_keep_fresh

logger = logging.getLogger(__name__)

# Heartbeats of workers gone this long are dropped, so the metrics list only recent workers.
HEARTBEAT_KEPT = dt.timedelta(days=1)
# How often the answers kept for Idempotency-Keys past their 24 hours are forgotten.
PRUNE_EVERY_SECONDS = 3600


def worker_beat(*, worker_id: str, started_at: dt.datetime) -> None:
    """Record that worker `worker_id` (this process) is alive now, and forget long-gone workers."""
    now = timezone.now()
    WorkerHeartbeat.objects.update_or_create(
        worker_id=worker_id,
        defaults={"hostname": socket.gethostname()[:255], "pid": os.getpid(), "started_at": started_at, "beat_at": now},
    )
    WorkerHeartbeat.objects.filter(beat_at__lt=now - HEARTBEAT_KEPT).delete()


class Housekeeping(threading.Thread):
    """The worker's housekeeping thread: beats until stop()."""

    def __init__(self, *, worker_id: str) -> None:
        super().__init__(name="worker-housekeeping", daemon=True)
        self.worker_id = worker_id
        self.started_at = timezone.now()
        self._stopped = threading.Event()
        self._next_prune = 0.0

    def run(self) -> None:
        try:
            while not self._stopped.is_set():
                self.tick()
                self._stopped.wait(settings.WORKER_HEARTBEAT_SECONDS)
        finally:
            connection.close()

    def tick(self) -> None:
        """One round of housekeeping. A failure (the database away for a moment) is logged and
        the next round tries again: the thread never dies of it."""
        close_old_connections()
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
