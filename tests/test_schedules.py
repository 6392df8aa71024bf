"""Scheduled conclusion: set by a concluder for up to 90 days ahead, cancelled by its author
or an admin, fired once by the worker as its author's press, cancelled when that role is gone."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from experiments.mixpanel.errors import MixpanelUnavailable
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
from tests.factories import _clock_shifted, assert_chain_valid, workspace_settings_set
from tests.fake_mixpanel import EXP_ID, FakeMixpanel, install
from tests.test_api import document, make_caller  # noqa: F401  (the fixtures, shared)
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
    kinds = {EntryKind.SCHEDULE_SET, EntryKind.SCHEDULE_CANCELLED, EntryKind.SCHEDULE_FIRED, EntryKind.SCHEDULE_REFUSED}
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


@pytest.mark.django_db(transaction=True)
def test_the_api_schedules_refuses_a_second_and_cancels(make_caller, pm, teammate, workspace, standin):  # noqa: F811
    experiment = standin.find(1001, status="active")
    path = f"/workspaces/{workspace.pk}/experiments/{experiment['id']}/schedule"
    run_at = (timezone.now() + dt.timedelta(days=3)).isoformat()
    body = {"run_at": run_at, "reason": "Planned length.", "reason_category": "significance"}
    assert make_caller(teammate)("POST", path, json=body).status_code == 403
    assert make_caller(pm, scope="read")("POST", path, json=body).status_code == 403
    too_far = {**body, "run_at": (timezone.now() + dt.timedelta(days=91)).isoformat()}
    assert make_caller(pm)("POST", path, json=too_far).status_code == 400
    made = make_caller(pm)("POST", path, json=body)
    assert made.status_code == 201, made.text
    assert made.json()["schedule"]["state"] == ScheduleState.SCHEDULED
    second = make_caller(pm)("POST", path, json=body)
    assert second.status_code == 409
    assert "already scheduled" in second.json()["detail"]
    assert make_caller(teammate)("DELETE", path).status_code == 403
    cancelled = make_caller(pm)("DELETE", path)
    assert cancelled.status_code == 200
    assert cancelled.json()["schedule"]["state"] == ScheduleState.CANCELLED
    assert make_caller(pm)("DELETE", path).status_code == 404
    assert standin.requests(method="PUT") == []


@pytest.mark.django_db
def test_the_experiment_page_schedules_shows_and_cancels(pm_client, pm, workspace, monkeypatch):
    install(monkeypatch, FakeMixpanel())
    page_url = reverse("experiments:experiment-detail", args=[workspace.pk, EXP_ID])
    assert "Schedule a Force conclude for later" in pm_client.get(page_url).content.decode()
    run_at = (timezone.now() + dt.timedelta(days=2)).strftime("%Y-%m-%d %H:%M")
    url = reverse("experiments:experiment-schedule", args=[workspace.pk, EXP_ID])
    answer = pm_client.post(
        url, {"run_at": run_at, "reason_category": "significance", "reason_text": "Due."}, follow=True
    )
    text = answer.content.decode()
    assert "Scheduled:" in text
    assert "Force conclude scheduled for" in text
    assert ScheduledConclusion.objects.get().state == ScheduleState.SCHEDULED
    refused = pm_client.post(
        url, {"run_at": "soon", "reason_category": "significance", "reason_text": "x"}, follow=True
    )
    assert "Not scheduled: Enter a date and time" in refused.content.decode()
    cancel = reverse("experiments:experiment-schedule-cancel", args=[workspace.pk, EXP_ID])
    assert "Cancelled:" in pm_client.post(cancel, follow=True).content.decode()
    assert ScheduledConclusion.objects.get().state == ScheduleState.CANCELLED


@pytest.mark.django_db
def test_a_viewer_sees_a_schedule_but_no_form_and_cannot_schedule(client, teammate, pm, workspace, monkeypatch):
    install(monkeypatch, FakeMixpanel())
    schedule_it(workspace, pm)
    client.force_login(teammate)
    text = client.get(reverse("experiments:experiment-detail", args=[workspace.pk, EXP_ID])).content.decode()
    assert "Force conclude scheduled for" in text
    assert "Cancel the schedule" not in text
    url = reverse("experiments:experiment-schedule", args=[workspace.pk, EXP_ID])
    run_at = (timezone.now() + dt.timedelta(days=2)).strftime("%Y-%m-%d %H:%M")
    answer = client.post(url, {"run_at": run_at, "reason_category": "significance", "reason_text": "x"}, follow=True)
    assert "Not scheduled: You may not force conclude" in answer.content.decode()


@pytest.mark.django_db
def test_a_schedule_shows_on_the_list_row_and_the_home_page(pm_client, pm, workspace, monkeypatch):
    install(monkeypatch, FakeMixpanel())
    schedule = schedule_it(workspace, pm, hours=30).schedule
    shown = schedule.run_at.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    listing = pm_client.get(reverse("experiments:experiment-list", args=[workspace.pk])).content.decode()
    assert "Force conclude scheduled for <time datetime=" in listing
    assert shown in listing
    home = pm_client.get(reverse("home")).content.decode()
    assert "Scheduled Force concludes" in home
    assert "set by Pat (pat)" in home
    schedules.schedule_cancel(schedule=schedule, user=pm)
    assert "Scheduled Force concludes" not in pm_client.get(reverse("home")).content.decode()


@pytest.mark.django_db
def test_a_concluded_experiment_cannot_be_scheduled(workspace, pm):
    outcome = schedule_it(workspace, pm, experiment_status="concluded")
    assert outcome.failure == "conflict"
    assert "already concluded in Mixpanel" in outcome.message
    assert not ScheduledConclusion.objects.exists()


@pytest.mark.django_db
def test_a_press_refused_before_any_attempt_leaves_an_entry_saying_why_and_is_not_retried(workspace, pm):
    workspace_settings_set(workspace, requires_approval=True)
    fake = FakeMixpanel()
    # Asking for approval reads the experiment first; Mixpanel does not answer.
    fake.get = MixpanelUnavailable("Mixpanel did not answer in time.")
    schedule = schedule_it(workspace, pm, hours=1).schedule
    with _clock_shifted(dt.timedelta(hours=1, minutes=1)):
        assert fire(schedule, fake) == "refused"
    schedule.refresh_from_db()
    assert schedule.state == ScheduleState.FIRED
    assert schedule.attempt_id is None
    assert schedule.refusal
    assert fake.puts == []
    assert not ConclusionAttempt.objects.exists()
    assert entry_kinds() == [EntryKind.SCHEDULE_SET, EntryKind.SCHEDULE_FIRED, EntryKind.SCHEDULE_REFUSED]
    entry = AuditEntry.objects.get(kind=EntryKind.SCHEDULE_REFUSED)
    assert entry.payload_data["schedule"]["refusal"] == schedule.refusal
    # A refusal is an answer: the sweep leaves it alone.
    with _clock_shifted(dt.timedelta(hours=2)):
        assert schedules.schedules_requeue_lost() == 0
    assert_chain_valid()


def fired_by_a_worker_that_stopped(schedule) -> None:
    """The state a worker leaves when it stops after firing and before the press answered."""
    ScheduledConclusion.objects.filter(pk=schedule.pk).update(
        state=ScheduleState.FIRED, fired_at=timezone.now() - dt.timedelta(minutes=10)
    )


@pytest.mark.django_db
def test_a_schedule_whose_worker_stopped_before_the_press_is_pressed_by_the_sweep_once(workspace, pm, monkeypatch):
    fake = install(monkeypatch, FakeMixpanel())
    schedule = schedule_it(workspace, pm, hours=1).schedule
    ScheduledConclusion.objects.filter(pk=schedule.pk).update(run_at=timezone.now() - dt.timedelta(minutes=20))
    fired_by_a_worker_that_stopped(schedule)
    assert schedules.schedules_requeue_lost() == 1
    assert schedules.schedules_requeue_lost() == 1  # a duplicate task, as two sweeps would queue
    tasks = [task for task in waiting() if task.task_path.endswith("press_unfinished_schedule")]
    assert len(tasks) == 2
    for task in tasks:
        make_due(task)
    run_ready_tasks()
    schedule.refresh_from_db()
    attempt = ConclusionAttempt.objects.get()
    assert schedule.attempt_id == attempt.pk
    assert attempt.state == AttemptState.SUCCEEDED
    assert len(fake.puts) == 1
    assert schedules.schedules_requeue_lost() == 0


@pytest.mark.django_db
def test_a_schedule_whose_worker_stopped_after_the_press_is_only_linked(workspace, pm):
    fake = FakeMixpanel()
    schedule = schedule_it(workspace, pm, hours=1).schedule
    with _clock_shifted(dt.timedelta(hours=1, minutes=1)):
        assert fire(schedule, fake) == f"fired: {AttemptState.SUCCEEDED}"
    attempt = ConclusionAttempt.objects.get()
    # The worker stopped before it linked the press it made.
    ScheduledConclusion.objects.filter(pk=schedule.pk).update(attempt=None)
    fired_by_a_worker_that_stopped(schedule)
    assert schedules.press_unfinished_schedule.call(schedule.pk) == f"linked: {AttemptState.SUCCEEDED}"
    schedule.refresh_from_db()
    assert schedule.attempt_id == attempt.pk
    assert ConclusionAttempt.objects.count() == 1
    assert len(fake.puts) == 1
