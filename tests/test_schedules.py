"""Scheduled conclusion: set by a concluder for up to 90 days ahead, cancelled by its author
or an admin, fired once by the worker as its author's press, cancelled when that role is gone."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from django.db import connection
from django.utils import timezone

from experiments.models import (
    AttemptState,
    AuditEntry,
    ConclusionAttempt,
    EntryKind,
    Membership,
    Role,
    ScheduledConclusion,
    ScheduleState,
)
from experiments.services import schedules
from tests.factories import _clock_shifted, assert_chain_valid
from tests.fake_mixpanel import EXP_ID, FakeMixpanel, install
from tests.test_tasks import make_due, run_ready_tasks, waiting


def schedule_it(workspace, user, *, hours: float = 2, **overrides):
    kwargs = {
        "workspace": workspace,
        "user": user,
        "experiment_id": EXP_ID,
        "experiment_name": "Checkout button colour",
        "run_at": timezone.now() + dt.timedelta(hours=hours),
        "reason_category": "significance",
        "reason_text": "Planned length reached.",
    }
    kwargs.update(overrides)
    return schedules.schedule_set(**kwargs)


def entry_kinds() -> list[str]:
    kinds = {EntryKind.SCHEDULE_SET, EntryKind.SCHEDULE_CANCELLED, EntryKind.SCHEDULE_FIRED}
    return list(AuditEntry.objects.filter(kind__in=kinds).order_by("seq").values_list("kind", flat=True))


def fire(schedule, fake) -> str:
    return schedules.schedule_fire(
        schedule=ScheduledConclusion.objects.select_related("workspace", "author").get(pk=schedule.pk), client=fake
    )


@pytest.mark.django_db
def test_a_concluder_schedules_a_force_conclude_and_a_task_waits_for_its_time(workspace, pm):
    outcome = schedule_it(workspace, pm)
    assert outcome.ok, outcome.message
    schedule = ScheduledConclusion.objects.get()
    assert schedule.state == ScheduleState.SCHEDULED
    assert schedule.author_name == "Pat (pat)"
    (task,) = waiting()
    assert task.task_path.endswith("fire_schedule")
    assert task.run_after == schedule.run_at
    assert entry_kinds() == [EntryKind.SCHEDULE_SET]
    payload = AuditEntry.objects.get(kind=EntryKind.SCHEDULE_SET).payload_data
    assert payload["schedule"]["reason_text"] == "Planned length reached."
    assert_chain_valid()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"hours": -1}, schedules.MSG_PAST),
        ({"hours": 24 * 91}, schedules.MSG_TOO_FAR),
        ({"reason_category": "whim"}, schedules.MSG_BAD_REASON),
        ({"reason_text": "  "}, schedules.MSG_REASON_REQUIRED),
        ({"run_at": dt.datetime(2030, 1, 1)}, schedules.MSG_NAIVE),
    ],
)
def test_bad_schedules_are_refused_with_a_clear_answer(workspace, pm, overrides, message):
    outcome = schedule_it(workspace, pm, **overrides)
    assert not outcome.ok
    assert outcome.message == message
    assert not ScheduledConclusion.objects.exists()


@pytest.mark.django_db
def test_scheduling_needs_exactly_the_permission_concluding_needs(workspace, teammate, outsider):
    for user in (teammate, outsider):
        outcome = schedule_it(workspace, user)
        assert outcome.failure == "forbidden"
    assert not ScheduledConclusion.objects.exists()


@pytest.mark.django_db
def test_one_live_schedule_per_experiment(workspace, pm, second):
    assert schedule_it(workspace, pm).ok
    again = schedule_it(workspace, second, hours=5)
    assert again.failure == "conflict"
    assert "already scheduled" in again.message
    assert "Pat (pat)" in again.message
    assert ScheduledConclusion.objects.count() == 1


@pytest.mark.django_db
def test_the_author_or_an_admin_cancels_and_no_one_else(workspace, pm, second, ws_admin):
    schedule = schedule_it(workspace, pm).schedule
    assert schedules.schedule_cancel(schedule=schedule, user=second).failure == "forbidden"
    assert schedules.schedule_cancel(schedule=schedule, user=ws_admin).ok
    schedule.refresh_from_db()
    assert schedule.state == ScheduleState.CANCELLED
    assert "Cancelled by" in schedule.cancel_reason
    assert schedules.schedule_cancel(schedule=schedule, user=pm).failure == "conflict"
    # Cancelled, it frees the experiment for a new schedule, and its task does nothing.
    assert schedule_it(workspace, pm).ok
    assert fire(schedule, FakeMixpanel()) == "already cancelled"
    assert entry_kinds() == [EntryKind.SCHEDULE_SET, EntryKind.SCHEDULE_CANCELLED, EntryKind.SCHEDULE_SET]


@pytest.mark.django_db
def test_at_its_time_the_worker_presses_as_the_author_once(workspace, pm, monkeypatch):
    fake = install(monkeypatch, FakeMixpanel())
    schedule_it(workspace, pm, hours=1)
    (task,) = waiting()
    make_due(task)
    with _clock_shifted(dt.timedelta(hours=1, minutes=1)):
        run_ready_tasks()
    schedule = ScheduledConclusion.objects.get()
    assert schedule.state == ScheduleState.FIRED
    attempt = ConclusionAttempt.objects.get()
    assert schedule.attempt_id == attempt.pk
    assert attempt.actor_id == pm.pk
    assert attempt.actor_name == f"Pat (pat) via schedule #{schedule.pk}"
    assert attempt.state == AttemptState.SUCCEEDED
    assert len(fake.puts) == 1
    # A second run of the task (a duplicate from the sweep) sends nothing more.
    assert fire(schedule, fake) == "already fired"
    assert len(fake.puts) == 1
    assert entry_kinds() == [EntryKind.SCHEDULE_SET, EntryKind.SCHEDULE_FIRED]
    assert_chain_valid()


@pytest.mark.django_db
def test_a_task_that_runs_early_queues_itself_again_and_sends_nothing(workspace, pm):
    fake = FakeMixpanel()
    schedule = schedule_it(workspace, pm, hours=1).schedule
    assert fire(schedule, fake) == schedules.RESULT_NOT_DUE
    assert fake.calls == []
    assert ScheduledConclusion.objects.get().state == ScheduleState.SCHEDULED
    assert [task.run_after for task in waiting()] == [schedule.run_at, schedule.run_at]


@pytest.mark.django_db
def test_a_schedule_is_cancelled_when_its_author_lost_the_role(workspace, pm):
    fake = FakeMixpanel()
    schedule = schedule_it(workspace, pm, hours=1).schedule
    Membership.objects.filter(user=pm, workspace=workspace).update(role=Role.VIEWER)
    with _clock_shifted(dt.timedelta(hours=2)):
        assert fire(schedule, fake) == "cancelled: role lost"
    schedule.refresh_from_db()
    assert schedule.state == ScheduleState.CANCELLED
    assert schedule.cancelled_by_name == schedules.WORKER_NAME
    assert "may no longer force conclude" in schedule.cancel_reason
    assert fake.calls == []
    assert not ConclusionAttempt.objects.exists()
    entry = AuditEntry.objects.get(kind=EntryKind.SCHEDULE_CANCELLED)
    assert "may no longer force conclude" in entry.payload_data["schedule"]["cancel_reason"]
    assert entry.actor_id is None


@pytest.mark.django_db
def test_the_sweep_queues_again_a_schedule_whose_task_was_lost(workspace, pm):
    schedule_it(workspace, pm, hours=1)
    assert schedules.schedules_requeue_lost() == 0
    with _clock_shifted(dt.timedelta(hours=1, minutes=10)):
        assert schedules.schedules_requeue_lost() == 1


@pytest.mark.django_db(transaction=True)
def test_two_workers_firing_at_once_send_one_put(workspace, pm):
    if connection.vendor != "postgresql":
        pytest.skip("two workers racing for the compare-and-set need PostgreSQL; SQLite admits one writer")
    fake = FakeMixpanel(put_delay=0.3)
    schedule = schedule_it(workspace, pm, hours=1).schedule
    ScheduledConclusion.objects.filter(pk=schedule.pk).update(run_at=timezone.now() - dt.timedelta(seconds=1))
    barrier = threading.Barrier(2)
    results: list = []
    errors: list = []

    def worker() -> None:
        try:
            row = ScheduledConclusion.objects.select_related("workspace", "author").get(pk=schedule.pk)
            barrier.wait(timeout=30)
            results.append(schedules.schedule_fire(schedule=row, client=fake))
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert sorted(results) == ["already fired", f"fired: {AttemptState.SUCCEEDED}"]
    assert len(fake.puts) == 1
    assert ConclusionAttempt.objects.count() == 1
    assert entry_kinds() == [EntryKind.SCHEDULE_SET, EntryKind.SCHEDULE_FIRED]
    assert_chain_valid()
