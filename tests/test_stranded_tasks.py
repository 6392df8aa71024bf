"""No task is lost: a task left running by a worker that died (or that ran past the limit) goes
back to the queue, a notification whose task ended without recording it gets another try, and
a worker that is merely slow is left alone, so nothing is done twice.

The sweep (experiments.services.worker) runs in every worker's housekeeping thread; here it is
called as that thread calls it, and, on PostgreSQL, run for real by a second worker process after
the first is killed mid-delivery.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time

import pytest
from django.db import connection
from django.tasks import TaskResultStatus
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from experiments.models import DeliveryState, NotificationDelivery, WorkerHeartbeat
from experiments.notifications import deliveries as notification_deliveries
from experiments.services import worker as worker_services
from tests.factories import make_attempt
from tests.test_notifications import webhook_on
from tests.test_tasks import make_due, run_ready_tasks

pytestmark = pytest.mark.django_db

DELIVER = "experiments.notifications.deliveries.deliver_notification"


def beat(worker_id: str, *, ago: float) -> None:
    moment = timezone.now() - dt.timedelta(seconds=ago)
    WorkerHeartbeat.objects.update_or_create(
        worker_id=worker_id, defaults={"hostname": "h", "pid": 1, "started_at": moment, "beat_at": moment}
    )


def delivery_task() -> DBTaskResult:
    return DBTaskResult.objects.get(task_path=DELIVER)


def taken_by(worker_id: str, *, started_ago: float = 1.0, sending: bool = True) -> DBTaskResult:
    """The delivery's task claimed by `worker_id`, which began sending (the delivery "sending")
    and never finished: what a worker killed mid-post leaves behind."""
    row = delivery_task()
    row.claim(worker_id)
    started = timezone.now() - dt.timedelta(seconds=started_ago)
    DBTaskResult.objects.filter(pk=row.pk).update(started_at=started)
    if sending:
        NotificationDelivery.objects.update(state=DeliveryState.SENDING, updated_at=started)
    row.refresh_from_db()
    return row


@pytest.fixture
def waiting_message(workspace, pm, webhook_receiver):
    """One webhook message about a conclusion, queued for the notifications worker."""
    webhook_on(workspace, webhook_receiver.url)
    make_attempt(workspace=workspace, actor=pm)
    return NotificationDelivery.objects.get()


def test_a_killed_workers_delivery_goes_back_to_the_queue_and_is_sent(waiting_message, webhook_receiver, settings):
    """Before, a worker killed mid-delivery left the message "Pending" and its task RUNNING for ever."""
    settings.WORKER_STALE_SECONDS = 60
    row = taken_by("killed-worker")
    beat("killed-worker", ago=61)
    assert run_ready_tasks() == []  # nothing is due: the task still looks taken

    assert worker_services.tasks_requeue_stranded() == 1
    row.refresh_from_db()
    assert row.status == TaskResultStatus.READY
    assert worker_services.tasks_requeue_stranded() == 0  # a second sweeper finds nothing to move

    (ran,) = run_ready_tasks()
    assert ran.return_value == DeliveryState.SENT
    assert ran.worker_ids == ["killed-worker", "test-worker"]
    delivery = NotificationDelivery.objects.get()
    assert (delivery.state, delivery.tries) == (DeliveryState.SENT, 1)
    assert len(webhook_receiver.messages()) == 1


def test_a_worker_that_died_before_its_first_beat_counts_as_gone_once_its_task_ran_that_long(waiting_message, settings):
    settings.WORKER_STALE_SECONDS = 60
    taken_by("never-beat", started_ago=30)
    assert worker_services.tasks_requeue_stranded() == 0
    DBTaskResult.objects.update(started_at=timezone.now() - dt.timedelta(seconds=61))
    assert worker_services.tasks_requeue_stranded() == 1


def test_a_slow_worker_that_still_beats_keeps_its_task(waiting_message, settings):
    settings.WORKER_STALE_SECONDS = 60
    settings.WORKER_TASK_LIMIT_SECONDS = 600
    row = taken_by("slow-worker", started_ago=300)
    beat("slow-worker", ago=5)
    assert worker_services.tasks_requeue_stranded() == 0
    row.refresh_from_db()
    assert row.status == TaskResultStatus.RUNNING
    # And a second run of the message (a task of its own) does not send it meanwhile.
    assert notification_deliveries.delivery_send(delivery_id=waiting_message.pk) == "already sending"


def test_a_task_past_the_limit_goes_back_and_the_stuck_run_cannot_record_over_its_successor(
    waiting_message, webhook_receiver, settings
):
    settings.WORKER_TASK_LIMIT_SECONDS = 600
    taken_by("stuck-worker", started_ago=601)
    beat("stuck-worker", ago=1)  # alive, but its task has run past the limit: stuck, not slow
    stuck_claim = NotificationDelivery.objects.get().updated_at
    assert worker_services.tasks_requeue_stranded() == 1

    (ran,) = run_ready_tasks()  # the second run takes the try over and sends
    assert ran.return_value == DeliveryState.SENT
    # The stuck run wakes and writes its outcome: refused, since the try is no longer its own.
    delivery = NotificationDelivery.objects.get()
    late = notification_deliveries._record_try(
        delivery, "could not be delivered", may_retry=True, claim={"state": "sending", "updated_at": stuck_claim}
    )
    assert late == notification_deliveries.RESULT_TAKEN_OVER
    delivery.refresh_from_db()
    assert (delivery.state, delivery.tries, delivery.last_error) == (DeliveryState.SENT, 1, "")
    assert not DBTaskResult.objects.filter(status=TaskResultStatus.READY).exists()  # no retry queued by it


def test_a_task_whose_worker_is_lost_again_and_again_fails_and_its_message_keeps_to_its_retry_plan(
    waiting_message, webhook_receiver, settings
):
    settings.WORKER_STALE_SECONDS = 60
    settings.NOTIFY_MAX_TRIES = 2
    settings.NOTIFY_BACKOFF_SECONDS = 30
    row = delivery_task()
    DBTaskResult.objects.filter(pk=row.pk).update(
        status=TaskResultStatus.RUNNING,
        worker_ids=[f"w{n}" for n in range(worker_services.MAX_RUNS)],
        started_at=timezone.now() - dt.timedelta(seconds=61),
    )
    NotificationDelivery.objects.update(state=DeliveryState.SENDING)
    assert worker_services.tasks_requeue_stranded() == 0
    row.refresh_from_db()
    assert row.status == TaskResultStatus.FAILED
    assert "in each of 5 runs" in row.traceback

    # The message is not left "sending": once nothing has moved it for a minute, another try.
    assert notification_deliveries.deliveries_recover_stranded() == 0  # too soon
    NotificationDelivery.objects.update(updated_at=timezone.now() - dt.timedelta(seconds=61))
    assert notification_deliveries.deliveries_recover_stranded() == 1
    delivery = NotificationDelivery.objects.get()
    assert (delivery.state, delivery.tries) == (DeliveryState.FAILED, 1)
    assert delivery.last_error == notification_deliveries.MSG_WORKER_LOST
    (retry,) = DBTaskResult.objects.filter(status=TaskResultStatus.READY)
    assert notification_deliveries.deliveries_recover_stranded() == 0  # its task is waiting

    # That try's task is lost too: past its wait and the grace, the last try is given up.
    retry.delete()
    NotificationDelivery.objects.update(updated_at=timezone.now() - dt.timedelta(seconds=30 + 61))
    assert notification_deliveries.deliveries_recover_stranded() == 1
    delivery.refresh_from_db()
    assert (delivery.state, delivery.tries) == (DeliveryState.GAVE_UP, 2)
    assert webhook_receiver.messages() == []


def test_a_delivery_whose_task_failed_with_an_error_is_tried_again(waiting_message, webhook_receiver, settings):
    settings.WORKER_STALE_SECONDS = 60
    DBTaskResult.objects.filter(task_path=DELIVER).update(status=TaskResultStatus.FAILED)
    NotificationDelivery.objects.update(updated_at=timezone.now() - dt.timedelta(seconds=61))
    assert notification_deliveries.deliveries_recover_stranded() == 1
    (retry,) = DBTaskResult.objects.filter(status=TaskResultStatus.READY)  # after the plan's first wait
    make_due(retry)
    assert [r.return_value for r in run_ready_tasks()] == [DeliveryState.SENT]
    assert NotificationDelivery.objects.get().tries == 2  # the lost try counts


def test_the_housekeeping_thread_sweeps(waiting_message, settings, monkeypatch):
    """tick() beats, then sweeps (at most every SWEEP_SECONDS)."""
    swept = []
    monkeypatch.setattr(worker_services, "close_old_connections", lambda: None)  # keeps the test's transaction
    monkeypatch.setattr(worker_services, "tasks_requeue_stranded", lambda: swept.append("tasks"))
    monkeypatch.setattr(worker_services, "deliveries_recover_stranded", lambda: swept.append("deliveries"))
    housekeeping = worker_services.Housekeeping(worker_id="w1")
    housekeeping.tick()
    housekeeping.tick()
    assert swept == ["tasks", "deliveries"]
    assert WorkerHeartbeat.objects.filter(worker_id="w1").exists()


# --- For real: a worker process killed mid-post, and another one that finishes its work -----


def _worker(env: dict[str, str], worker_id: str) -> subprocess.Popen:
    command = [
        sys.executable,
        "manage.py",
        "db_worker",
        "--no-reload",
        "--no-startup-delay",
        "--interval",
        "0.2",
        "--queue-name",
        "notifications",
        "--worker-id",
        worker_id,
    ]
    return subprocess.Popen(command, cwd=os.getcwd(), env=env)


def _wait(condition, what: str, within: float) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.1)


@pytest.mark.django_db(transaction=True)
def test_a_worker_process_killed_mid_post_leaves_its_message_to_the_next_worker(workspace, pm, webhook_receiver):
    if connection.vendor != "postgresql":
        pytest.skip(
            "needs PostgreSQL (set DATABASE_URL=postgres://...): SQLite's in-memory test database cannot be "
            "shared with worker processes"
        )
    from tests.processes import shared_test_database_url

    webhook_on(workspace, webhook_receiver.url)
    make_attempt(workspace=workspace, actor=pm)
    env = {
        **os.environ,
        "DATABASE_URL": shared_test_database_url(),
        "DJANGO_LOG_LEVEL": "WARNING",
        "NOTIFY_WEBHOOK_ALLOW_NETWORKS": "127.0.0.0/8",
        "NOTIFY_WEBHOOK_TIMEOUT": "60",
        "WORKER_HEARTBEAT_SECONDS": "0.2",
        "WORKER_STALE_SECONDS": "2",
    }
    webhook_receiver.delay = 30  # holds the post: the worker is killed in the middle of it
    first = _worker(env, "first")
    try:
        _wait(webhook_receiver.messages, "the first worker's post", within=60)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    delivery = NotificationDelivery.objects.get()
    assert delivery.state == DeliveryState.SENDING
    assert delivery_task().status == TaskResultStatus.RUNNING

    webhook_receiver.delay = 0
    time.sleep(2.5)  # the first worker's heartbeat goes stale
    second = _worker(env, "second")
    try:
        _wait(lambda: NotificationDelivery.objects.get().state == DeliveryState.SENT, "the message sent", within=60)
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=30)
    assert delivery_task().worker_ids == ["first", "second"]
    assert len(webhook_receiver.messages()) == 2  # the cut-off post, and the one that counted
