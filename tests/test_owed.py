"""Decisions owed: the rules (each state from stand-in data), and reminders told once per state.

The rules read the list's summaries (summarize_experiment, as the client makes them), so the
experiments here are raw JSON as Mixpanel sends it. Reminders go through the real chain and
notification machinery (a local webhook receiver, Django's in-memory outbox).
"""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from django.core import mail
from django.db import connection
from django.urls import reverse

from experiments.mixpanel.experiment import summarize_experiment
from experiments.models import (
    AuditEntry,
    DeliveryChannel,
    EntryKind,
    Membership,
    NotificationDelivery,
    OwedReason,
    OwedReminder,
    Role,
)
from experiments.selectors import experiment_list as list_selectors
from experiments.selectors import owed as owed_selectors
from experiments.services import owed as owed_services
from tests.factories import assert_chain_valid
from tests.fake_mixpanel import FakeMixpanel, install
from tests.test_notifications import bookmark, email_on, webhook_on
from tests.test_tasks import run_ready_tasks

NOW = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)


def iso(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def raw(exp_id: str = "exp-1", status: str = "active", *, started_days_ago: float = 10, **extra) -> dict:
    data = {
        "id": exp_id,
        "name": f"Experiment {exp_id}",
        "status": status,
        "start_date": iso(NOW - dt.timedelta(days=started_days_ago)),
        "creator_name": "Olive Owner",
        "creator_email": "olive@example.com",
        "variants": [{"key": "control"}, {"key": "green"}],
        "exposures_cache": {"control": 100, "green": 98},
    }
    data.update(extra)
    return data


def state(data: dict, now: dt.datetime = NOW) -> owed_selectors.OwedState | None:
    return owed_selectors.owed_state(experiment=summarize_experiment(data), now=now)


# --- The rules --------------------------------------------------------------------------------


def test_an_active_experiment_within_its_plan_owes_nothing():
    assert state(raw(settings={"duration_days": 14}, started_days_ago=10)) is None


def test_due_once_its_planned_length_is_reached_since_its_planned_end():
    found = state(raw(settings={"duration_days": 14}, started_days_ago=16))
    assert found == owed_selectors.OwedState(OwedReason.DUE, NOW - dt.timedelta(days=2))


def test_due_by_a_planned_end_date_in_settings():
    end = NOW - dt.timedelta(hours=3)
    found = state(raw(settings={"planned_end_date": iso(end)}))
    assert found == owed_selectors.OwedState(OwedReason.DUE, end)


def test_overdue_past_its_planned_end_plus_the_grace_days(settings):
    settings.OWED_OVERDUE_DAYS = 7
    found = state(raw(settings={"duration_weeks": 2}, started_days_ago=30))
    planned_end = NOW - dt.timedelta(days=16)
    assert found == owed_selectors.OwedState(OwedReason.OVERDUE, planned_end + dt.timedelta(days=7))
    # One day short of the grace: still only due.
    assert state(raw(settings={"duration_weeks": 2}, started_days_ago=20)).reason == OwedReason.DUE


def test_overdue_without_a_plan_after_the_longest_run(settings):
    settings.OWED_MAX_RUNNING_DAYS = 90
    assert state(raw(started_days_ago=89)) is None
    found = state(raw(started_days_ago=91))
    assert found == owed_selectors.OwedState(OwedReason.OVERDUE, NOW - dt.timedelta(days=1))


def test_undecided_when_concluded_and_not_decided_past_the_grace_days(settings):
    settings.OWED_UNDECIDED_DAYS = 7
    ended = NOW - dt.timedelta(days=9)
    found = state(raw(status="concluded", end_date=iso(ended)))
    assert found == owed_selectors.OwedState(OwedReason.UNDECIDED, ended + dt.timedelta(days=7))
    assert state(raw(status="concluded", end_date=iso(NOW - dt.timedelta(days=6)))) is None


def test_undecided_includes_one_moved_back_to_concluded_after_a_decision():
    # Mixpanel's "Undo decision" leaves it concluded with its old end date.
    undone = raw(status="concluded", end_date=iso(NOW - dt.timedelta(days=30)), modified=iso(NOW))
    assert state(undone).reason == OwedReason.UNDECIDED


@pytest.mark.parametrize("status", ["success", "fail", "draft"])
def test_decided_and_draft_experiments_owe_nothing(status):
    assert state(raw(status=status, end_date=iso(NOW - dt.timedelta(days=60)), started_days_ago=200)) is None


def test_no_data_after_the_quiet_days_with_zero_exposures(settings):
    settings.OWED_NO_DATA_DAYS = 2
    silent = raw(started_days_ago=3, exposures_cache={"control": 0, "green": 0})
    assert state(silent) == owed_selectors.OwedState(OwedReason.NO_DATA, NOW - dt.timedelta(days=1))
    assert state(raw(started_days_ago=1, exposures_cache={"control": 0, "green": 0})) is None
    # Exposures that cannot be read are not zero.
    assert state(raw(started_days_ago=3, exposures_cache=None)) is None


def test_at_most_one_state_overdue_before_no_data():
    both = raw(started_days_ago=100, exposures_cache={"total": 0})
    assert state(both).reason == OwedReason.OVERDUE


def test_a_deleted_experiment_owes_nothing():
    assert state(raw(started_days_ago=200, deleted=iso(NOW))) is None


# --- Reminders --------------------------------------------------------------------------------


@pytest.fixture
def overdue_fake(monkeypatch):
    fake = FakeMixpanel(
        [
            raw("late-1", started_days_ago=120),
            raw("fine-1", started_days_ago=3),
            raw("ended-1", status="concluded", end_date=iso(NOW - dt.timedelta(days=20))),
        ]
    )
    return install(monkeypatch, fake)


def snapshot_of(workspace):
    return list_selectors.experiment_list_cached(workspace=workspace, refresh=True)


@pytest.mark.django_db
def test_a_state_change_is_told_once_to_the_webhook_and_kept_in_the_chain(
    workspace, ws_admin, overdue_fake, webhook_receiver
):
    webhook_on(workspace, webhook_receiver.url)
    snapshot = snapshot_of(workspace)

    assert owed_services.owed_reminders_send(workspace=workspace, snapshot=snapshot, now=NOW) == 2
    assert owed_services.owed_reminders_send(workspace=workspace, snapshot=snapshot, now=NOW) == 0

    rows = set(OwedReminder.objects.values_list("experiment_id", "reason"))
    assert rows == {("late-1", OwedReason.OVERDUE), ("ended-1", OwedReason.UNDECIDED)}
    entries = AuditEntry.objects.filter(kind=EntryKind.EXPERIMENT_OWED)
    assert sorted(e.experiment_id for e in entries) == ["ended-1", "late-1"]
    assert {e.actor_name for e in entries} == {owed_services.SYSTEM_NAME}
    assert_chain_valid()
    run_ready_tasks()
    texts = sorted(message.text for message in webhook_receiver.received)
    assert len(texts) == 2
    assert "concluded, not decided" in texts[0]
    assert "Experiment ended-1" in texts[0]
    assert "overdue" in texts[1]
    assert "Experiment late-1" in texts[1]
    # In the settings page's delivery log.
    assert NotificationDelivery.objects.filter(workspace=workspace, channel=DeliveryChannel.WEBHOOK).count() == 2


@pytest.mark.django_db
def test_a_new_state_of_the_same_experiment_is_told_but_never_the_same_one_again(workspace, monkeypatch):
    webhook_on(workspace, "https://hooks.example.com/services/T0/B0/abcd")
    fake = install(monkeypatch, FakeMixpanel([raw("x", settings={"duration_days": 14}, started_days_ago=15)]))
    told = owed_services.owed_reminders_send(workspace=workspace, snapshot=snapshot_of(workspace), now=NOW)
    assert told == 1
    fake.state[(1001, "x")]["start_date"] = iso(NOW - dt.timedelta(days=40))
    assert owed_services.owed_reminders_send(workspace=workspace, snapshot=snapshot_of(workspace), now=NOW) == 1
    # Back to due (a plan lengthened in Mixpanel): told already, so not again.
    fake.state[(1001, "x")]["start_date"] = iso(NOW - dt.timedelta(days=15))
    assert owed_services.owed_reminders_send(workspace=workspace, snapshot=snapshot_of(workspace), now=NOW) == 0
    assert sorted(OwedReminder.objects.values_list("reason", flat=True)) == [OwedReason.DUE, OwedReason.OVERDUE]


@pytest.mark.django_db
def test_two_workers_that_saw_the_same_change_record_one_reminder(workspace, overdue_fake):
    """The second worker read the reminders before the first wrote its own: its insert loses."""
    webhook_on(workspace, "https://hooks.example.com/services/T0/B0/abcd")
    snapshot = snapshot_of(workspace)
    (late,) = [
        o
        for o in owed_selectors.owed_in_snapshot(workspace=workspace, snapshot=snapshot, now=NOW)
        if o.experiment.id == "late-1"
    ]
    assert owed_services._remind(workspace, late) is True
    assert owed_services._remind(workspace, late) is False
    assert OwedReminder.objects.count() == 1
    assert AuditEntry.objects.filter(kind=EntryKind.EXPERIMENT_OWED).count() == 1
    assert NotificationDelivery.objects.count() == 1
    assert_chain_valid()


@pytest.mark.django_db(transaction=True)
def test_two_workers_running_at_once_send_one_reminder_per_state(workspace, overdue_fake):
    if connection.vendor != "postgresql":
        pytest.skip(
            "two workers at once need PostgreSQL (set DATABASE_URL=postgres://...): SQLite's in-memory "
            "test database admits one writer; test_two_workers_that_saw_the_same_change... covers the race there"
        )
    webhook_on(workspace, "https://hooks.example.com/services/T0/B0/abcd")
    snapshot = snapshot_of(workspace)
    barrier = threading.Barrier(2)
    results: list[int] = []
    errors: list[BaseException] = []
    real = owed_selectors.owed_in_snapshot

    def computed_then_wait(**kwargs):
        found = real(**kwargs)
        barrier.wait(timeout=30)  # both have worked out the change before either records it
        return found

    owed_services.owed_selectors.owed_in_snapshot = computed_then_wait
    try:

        def worker() -> None:
            try:
                results.append(owed_services.owed_reminders_send(workspace=workspace, snapshot=snapshot, now=NOW))
            except BaseException as exc:
                errors.append(exc)
            finally:
                connection.close()

        threads = [threading.Thread(target=worker) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        owed_services.owed_selectors.owed_in_snapshot = real
    assert errors == []
    assert sum(results) == 2  # two states, each told by one of the workers
    assert OwedReminder.objects.count() == 2
    assert AuditEntry.objects.filter(kind=EntryKind.EXPERIMENT_OWED).count() == 2
    assert NotificationDelivery.objects.count() == 2
    assert_chain_valid()


@pytest.mark.django_db
def test_a_kind_turned_off_is_not_told_and_nothing_is_told_without_a_channel(workspace, overdue_fake):
    snapshot = snapshot_of(workspace)
    assert owed_services.owed_reminders_send(workspace=workspace, snapshot=snapshot, now=NOW) == 0
    webhook_on(workspace, "https://hooks.example.com/services/T0/B0/abcd")
    workspace.remind_overdue = False
    workspace.save()
    assert owed_services.owed_reminders_send(workspace=workspace, snapshot=snapshot, now=NOW) == 1
    assert list(OwedReminder.objects.values_list("reason", flat=True)) == [OwedReason.UNDECIDED]


@pytest.mark.django_db
def test_email_goes_to_the_owner_when_a_member_and_to_bookmarkers(
    workspace, pm, teammate, outsider, django_user_model, overdue_fake
):
    email_on(workspace)
    owner = django_user_model.objects.create_user(username="olive", email="Olive@Example.com", password="x")
    Membership.objects.create(user=owner, workspace=workspace, role=Role.VIEWER)
    teammate.email = "tess@example.com"
    teammate.save()
    bookmark(workspace, teammate, "late-1")
    pm.email = "pat@example.com"
    pm.save()  # a member who neither owns nor bookmarked it
    outsider.email = "otto@example.com"
    outsider.save()
    bookmark(outsider.memberships.get().workspace, outsider, "late-1")  # the same id, in another workspace
    owed_services.owed_reminders_send(workspace=workspace, snapshot=snapshot_of(workspace), now=NOW)
    run_ready_tasks()
    to_late = sorted(m.to[0] for m in mail.outbox if "late-1" in m.body)
    assert [a.lower() for a in to_late] == ["olive@example.com", "tess@example.com"]
    (message,) = [m for m in mail.outbox if m.to == ["tess@example.com"]]
    assert reverse("experiments:experiment-detail", args=[workspace.pk, "late-1"]) in message.body


@pytest.mark.django_db
def test_a_burst_is_spread_over_refreshes(workspace, monkeypatch):
    webhook_on(workspace, "https://hooks.example.com/services/T0/B0/abcd")
    many = [raw(f"old-{n:03d}", started_days_ago=100 + n) for n in range(owed_services.REMINDERS_PER_RUN + 5)]
    install(monkeypatch, FakeMixpanel(many))
    snapshot = snapshot_of(workspace)
    first = owed_services.owed_reminders_send(workspace=workspace, snapshot=snapshot, now=NOW)
    assert first == owed_services.REMINDERS_PER_RUN
    assert owed_services.owed_reminders_send(workspace=workspace, snapshot=snapshot, now=NOW) == 5
    # The longest owed went first.
    assert OwedReminder.objects.order_by("pk").first().experiment_id == f"old-{len(many) - 1:03d}"
