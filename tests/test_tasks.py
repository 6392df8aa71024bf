"""The reconcile task: queued in the database, run by the worker, resolves by reading, backs off while
Mixpanel is unreachable, and leaves what it cannot resolve to reconcile_conclusions."""

from __future__ import annotations

import datetime as dt
import logging

import pytest
from django.db import DatabaseError, transaction
from django.db.models import F
from django.tasks import TaskResultStatus
from django.utils import timezone
from django_tasks_db.management.commands.db_worker import Worker
from django_tasks_db.models import DBTaskResult

from experiments.mixpanel import client as mixpanel
from experiments.mixpanel.errors import MixpanelConfigError, MixpanelOutcomeUnknown, MixpanelUnavailable
from experiments.models import AttemptState, AuditEntry, ConclusionAttempt, ConclusionClaim, EntryKind
from experiments.services import approvals as approval_services
from experiments.services import decisions
from experiments.services import reconcile as reconcile_services
from experiments.services.attempts import STATE_BLOCKED
from experiments.services.reconcile import RESULT_GAVE_UP, RESULT_RETRY, retry_delay
from tests.factories import assert_chain_valid, made_long_ago
from tests.fake_mixpanel import FakeMixpanel, ProcessDied, install, raw_experiment
from tests.test_reconcile import press

REQUESTED = EntryKind.CONCLUSION_REQUESTED
UNKNOWN = EntryKind.CONCLUSION_UNKNOWN
RECONCILED = EntryKind.CONCLUSION_RECONCILED
UNREACHABLE = MixpanelUnavailable("Mixpanel did not answer in time.")


def run_ready_tasks(queues: tuple[str, ...] = ("*",)) -> list[DBTaskResult]:
    """What `manage.py db_worker` does with each task that is due, in this test's transaction,
    on every queue (or those named: "default", "notifications").

    The worker's own loop also closes "old" connections between tasks, which would end
    the test's transaction, so the loop is driven here; claiming and running a task
    are the library's own code.
    """
    ready = DBTaskResult.objects.ready()
    if "*" not in queues:
        ready = ready.filter(queue_name__in=queues)
    worker = Worker(
        queue_names=list(queues),
        interval=0,
        batch=True,
        backend_name="default",
        startup_delay=False,
        max_tasks=None,
        worker_id="test-worker",
        excluded_queue_names=[],
    )
    ran = []
    while True:
        # Claimed in a transaction, as the worker does: get_locked() is SELECT ... FOR UPDATE,
        # which PostgreSQL refuses outside one (a live-server test has no outer transaction).
        with transaction.atomic():
            row = ready.get_locked()
            if row is None:
                break
            row.claim(worker.worker_id)
        worker.run_task(row)
        row.refresh_from_db()
        ran.append(row)
    return ran


def make_due(row: DBTaskResult) -> None:
    """Let time pass: the deferred task becomes due now."""
    DBTaskResult.objects.filter(pk=row.pk).update(run_after=timezone.now())


def kinds(attempt):
    return list(AuditEntry.objects.filter(attempt=attempt).order_by("seq").values_list("kind", flat=True))


def waiting() -> list[DBTaskResult]:
    return list(DBTaskResult.objects.filter(status=TaskResultStatus.READY).order_by("enqueued_at"))


@pytest.mark.django_db
def test_a_press_queues_its_reconcile_task_with_its_intent_for_when_its_put_cannot_be_in_flight(workspace, pm):
    outcome = press(workspace, pm, FakeMixpanel(put=("apply", MixpanelOutcomeUnknown())))

    (queued,) = waiting()
    assert queued.task_path == "experiments.services.reconcile.reconcile_attempt"
    assert queued.args_kwargs["args"] == [outcome.attempt.pk, 1]
    assert queued.run_after == reconcile_services.attempt_judgeable_at(outcome.attempt)


@pytest.mark.django_db
def test_a_refused_press_queues_nothing(workspace, pm):
    press(workspace, pm, FakeMixpanel(put=("apply", MixpanelOutcomeUnknown())))
    blocked = press(workspace, pm, FakeMixpanel())  # the first attempt holds the claim
    assert blocked.state == STATE_BLOCKED
    assert len(waiting()) == 1


@pytest.mark.django_db
def test_the_task_is_queued_in_the_intent_transaction(monkeypatch, workspace, pm):
    """One commit holds the intent and its task: never an attempt with nothing to resolve it."""

    def queue_down(*args, **kwargs):
        raise DatabaseError("the task table refused the insert")

    # The press queues its reconcile task through the name approvals.approval_press imported.
    monkeypatch.setattr(approval_services, "reconcile_attempt_when_judgeable", queue_down)
    fake = FakeMixpanel()
    with pytest.raises(DatabaseError):
        press(workspace, pm, fake)
    assert not ConclusionAttempt.objects.exists()
    assert not ConclusionClaim.objects.exists()
    assert not AuditEntry.objects.exists()
    assert fake.calls == []  # nothing was sent


@pytest.mark.django_db
def test_unknown_outcome_is_resolved_by_the_task_queued_at_the_press_with_one_read(monkeypatch, workspace, pm):
    fake = FakeMixpanel(put=("apply", MixpanelOutcomeUnknown()))  # applied, answer lost
    with made_long_ago():
        outcome = press(workspace, pm, fake)  # its task is due now
    assert outcome.state == AttemptState.UNKNOWN
    install(monkeypatch, fake)
    fake.calls.clear()

    ran = run_ready_tasks()

    assert [(r.status, r.return_value) for r in ran] == [(TaskResultStatus.SUCCESSFUL, "applied")]
    attempt = ConclusionAttempt.objects.get()
    assert attempt.state == AttemptState.RECONCILED_APPLIED
    assert kinds(attempt) == [REQUESTED, UNKNOWN, RECONCILED]
    assert AuditEntry.objects.get(kind=RECONCILED).actor_name == "reconcile_conclusions"
    assert [c[0] for c in fake.calls] == ["get"]  # read once, never sent again
    assert ConclusionClaim.objects.filter(attempt=attempt).exists()
    assert_chain_valid()


@pytest.mark.django_db
def test_attempt_left_requested_by_a_crash_is_resolved_and_its_claim_released(monkeypatch, workspace, pm):
    with made_long_ago(), pytest.raises(ProcessDied):
        press(workspace, pm, FakeMixpanel(put=ProcessDied()))  # died before the PUT left
    attempt = ConclusionAttempt.objects.get()
    assert attempt.state == AttemptState.REQUESTED
    fake = install(monkeypatch, FakeMixpanel())

    ran = run_ready_tasks()  # the task queued with its intent: nobody enqueued anything since

    assert [r.return_value for r in ran] == ["not_applied"]
    attempt.refresh_from_db()
    assert attempt.state == AttemptState.RECONCILED_NOT_APPLIED
    assert kinds(attempt) == [REQUESTED, RECONCILED]
    assert not ConclusionClaim.objects.exists()
    assert fake.puts == []
    assert_chain_valid()


@pytest.mark.django_db
def test_an_attempt_whose_put_may_be_in_flight_is_queued_for_when_it_cannot_be(monkeypatch, workspace, pm):
    fake = FakeMixpanel(put=("apply", MixpanelOutcomeUnknown()))
    outcome = press(workspace, pm, fake)  # just now: its PUT may still be on its way
    install(monkeypatch, fake)
    fake.calls.clear()
    judgeable_at = reconcile_services.attempt_judgeable_at(outcome.attempt)
    assert judgeable_at > timezone.now()

    assert run_ready_tasks() == []  # not due yet
    (queued,) = waiting()
    assert queued.run_after == judgeable_at

    # A task that runs early anyway (queued by hand) reads nothing and comes back then,
    # without spending one of its tries.
    reconcile_services.reconcile_attempt.enqueue(outcome.attempt.pk, 2)
    assert [r.return_value for r in run_ready_tasks()] == [reconcile_services.RESULT_TOO_EARLY]
    assert fake.calls == []
    later = [row for row in waiting() if row.pk != queued.pk]
    assert [(row.run_after, row.args_kwargs["args"]) for row in later] == [(judgeable_at, [outcome.attempt.pk, 2])]

    ConclusionAttempt.objects.filter(pk=outcome.attempt.pk).update(
        created_at=F("created_at") - (judgeable_at - timezone.now()) - dt.timedelta(seconds=1)
    )
    for row in waiting():
        make_due(row)
    assert sorted(r.return_value for r in run_ready_tasks()) == ["already reconciled_applied", "applied"]
    assert [c[0] for c in fake.calls] == ["get"]


@pytest.mark.django_db
def test_a_final_attempt_is_left_alone(monkeypatch, workspace, pm):
    outcome = press(workspace, pm, FakeMixpanel())
    assert outcome.state == AttemptState.SUCCEEDED
    fake = install(monkeypatch, FakeMixpanel())
    entries = AuditEntry.objects.count()

    (queued,) = waiting()
    make_due(queued)

    assert [r.return_value for r in run_ready_tasks()] == ["already succeeded"]
    assert fake.calls == []
    assert AuditEntry.objects.count() == entries


@pytest.mark.django_db
def test_an_attempt_that_does_not_exist_is_a_no_op(monkeypatch, db):
    fake = install(monkeypatch, FakeMixpanel())
    reconcile_services.reconcile_attempt.enqueue(987654)
    assert [r.return_value for r in run_ready_tasks()] == [reconcile_services.RESULT_MISSING]
    assert fake.calls == []


@pytest.fixture
def stuck(workspace, pm):
    with made_long_ago(), pytest.raises(ProcessDied):
        press(workspace, pm, FakeMixpanel(put=ProcessDied()))
    return ConclusionAttempt.objects.get()


@pytest.mark.django_db
def test_while_mixpanel_is_unreachable_the_task_backs_off_then_resolves(monkeypatch, settings, stuck):
    settings.RECONCILE_TASK_BACKOFF_SECONDS = 15
    fake = install(monkeypatch, FakeMixpanel(get=UNREACHABLE))

    delays = []
    for try_number in (1, 2, 3):
        before = timezone.now()
        ran = run_ready_tasks()
        after = timezone.now()
        assert [r.return_value for r in ran] == [RESULT_RETRY]
        (queued,) = waiting()  # exactly one retry waits, not yet due
        assert queued.args_kwargs["args"] == [stuck.pk, try_number + 1]
        assert run_ready_tasks() == []
        assert before + retry_delay(try_number) <= queued.run_after <= after + retry_delay(try_number)
        delays.append(retry_delay(try_number).total_seconds())
        make_due(queued)
    assert delays == [15, 30, 60]  # doubling
    stuck.refresh_from_db()
    assert stuck.state == AttemptState.REQUESTED  # nothing recorded while unreadable
    assert kinds(stuck) == [REQUESTED]

    fake.get = None  # Mixpanel is back
    assert [r.return_value for r in run_ready_tasks()] == ["not_applied"]
    assert waiting() == []
    stuck.refresh_from_db()
    assert stuck.state == AttemptState.RECONCILED_NOT_APPLIED
    assert fake.puts == []
    assert [c[0] for c in fake.calls] == ["get"] * 4


@pytest.mark.django_db
def test_after_the_last_try_the_attempt_is_left_to_the_cron_safety_net(monkeypatch, settings, stuck, caplog):
    settings.RECONCILE_TASK_MAX_TRIES = 3
    install(monkeypatch, FakeMixpanel(get=UNREACHABLE))

    results = []
    with caplog.at_level(logging.INFO, logger="experiments.services.reconcile"):
        for _ in range(5):
            results += [r.return_value for r in run_ready_tasks()]
            for row in waiting():
                make_due(row)

    assert results == [RESULT_RETRY, RESULT_RETRY, RESULT_GAVE_UP]
    assert waiting() == []
    stuck.refresh_from_db()
    assert stuck.state == AttemptState.REQUESTED
    assert ConclusionClaim.objects.filter(attempt=stuck).exists()  # still blocks a second PUT
    gave_up = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(gave_up) == 1
    assert "reconcile_conclusions will pick it up" in gave_up[0].getMessage()


@pytest.mark.django_db
def test_a_misconfigured_client_is_retried_like_an_unreachable_mixpanel(monkeypatch, stuck):
    def broken(workspace):
        raise MixpanelConfigError()

    monkeypatch.setattr(mixpanel, "client_for", broken)
    assert [r.return_value for r in run_ready_tasks()] == [RESULT_RETRY]
    assert len(waiting()) == 1


def test_the_queue_is_the_database():
    from django.conf import settings

    assert settings.TASKS["default"]["BACKEND"] == "django_tasks_db.DatabaseBackend"
    assert reconcile_services.reconcile_attempt.get_backend().supports_defer


# --- the real worker process -------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_db_worker_command_resolves_a_crashed_attempt_from_the_queue(standin, workspace, pm):
    """`manage.py db_worker`, as make run and make serve start it, in its own process."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from django.db import connection

    from tests.processes import shared_test_database_url
    from tests.test_reconcile import DiesAfterSending

    if connection.vendor != "postgresql":
        pytest.skip(
            "the worker-process test needs PostgreSQL (set DATABASE_URL=postgres://...): SQLite's in-memory "
            "test database cannot be shared with another process"
        )
    exp_id = standin.find(1001, status="active")["id"]
    with pytest.raises(ProcessDied):  # the PUT landed, then the process died
        press(workspace, pm, DiesAfterSending(mixpanel.client_for(workspace)), exp_id)
    # An hour ago: past the in-flight limit whatever deadlines the worker process reads.
    ConclusionAttempt.objects.update(created_at=F("created_at") - dt.timedelta(hours=1))
    attempt = ConclusionAttempt.objects.get()
    standin.clear_requests()
    (queued,) = waiting()  # queued with the intent, before the process died
    make_due(queued)

    env = {
        **os.environ,
        "DATABASE_URL": shared_test_database_url(),
        "MIXPANEL_API_BASE_URL": standin.url,
    }
    worker = subprocess.run(
        [sys.executable, "manage.py", "db_worker", "--batch", "--no-reload", "--no-startup-delay"],
        cwd=Path(__file__).resolve().parent.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert worker.returncode == 0, worker.stderr[-2000:]
    rows = [(row.status, row.return_value) for row in DBTaskResult.objects.all()]
    assert rows == [(TaskResultStatus.SUCCESSFUL, "applied")]
    attempt.refresh_from_db()
    assert attempt.state == AttemptState.RECONCILED_APPLIED
    assert kinds(attempt) == [REQUESTED, RECONCILED]
    assert standin.requests(method="PUT") == []
    assert len(standin.requests(method="GET", path_contains=exp_id)) == 1


@pytest.mark.django_db
def test_a_decision_with_an_unknown_outcome_is_resolved_by_its_task(monkeypatch, workspace, pm):
    concluded = raw_experiment(status="concluded", end_date="2026-11-20T10:00:00Z")
    fake = FakeMixpanel([concluded], patch=("apply", MixpanelOutcomeUnknown()))  # applied, answer lost
    with made_long_ago():
        outcome = decisions.experiment_decide(
            workspace=workspace,
            user=pm,
            experiment_id=concluded["id"],
            experiment_name="x",
            variant=None,
            note="Neither variant moved the metric.",
            client=fake,
        )
    assert outcome.state == AttemptState.UNKNOWN
    install(monkeypatch, fake)
    fake.calls.clear()

    ran = run_ready_tasks()

    assert [(r.status, r.return_value) for r in ran] == [(TaskResultStatus.SUCCESSFUL, "applied")]
    attempt = ConclusionAttempt.objects.get()
    assert attempt.state == AttemptState.RECONCILED_APPLIED
    assert kinds(attempt) == [EntryKind.DECISION_REQUESTED, EntryKind.DECISION_UNKNOWN, EntryKind.DECISION_RECONCILED]
    assert [c[0] for c in fake.calls] == ["get"]  # read once, never sent again
    assert_chain_valid()
