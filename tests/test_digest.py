"""The weekly digest: due from the configured day and hour, sent once per ISO week however many
workers try, an email per person (unless they turned it off on their own page) and one webhook
message per workspace."""

from __future__ import annotations

import datetime as dt

import pytest
from django.core import mail
from django.urls import reverse

from experiments.models import AuditEntry, DigestEmail, DigestPeriod, EntryKind, NotificationDelivery
from experiments.services import digest as digest_services
from tests.fake_mixpanel import FakeMixpanel, install
from tests.test_notifications import webhook_on
from tests.test_owed import iso, raw
from tests.test_tasks import run_ready_tasks

pytestmark = pytest.mark.django_db

# Monday 7 December 2026 is in ISO week 50.
MONDAY_9 = dt.datetime(2026, 12, 7, 9, 0, tzinfo=dt.UTC)


@pytest.fixture
def owed_lists(monkeypatch):
    return install(
        monkeypatch,
        FakeMixpanel(
            {
                1001: [raw("late-1", started_days_ago=200), raw("fine-1", started_days_ago=1)],
                2002: [raw("ended-2", status="concluded", end_date=iso(MONDAY_9 - dt.timedelta(days=30)))],
            }
        ),
    )


@pytest.fixture
def people(pm, teammate, ws_admin, outsider):
    for user, address in ((pm, "pat@example.com"), (teammate, "tess@example.com"), (outsider, "otto@example.com")):
        user.email = address
        user.save()
    return pm, teammate, ws_admin, outsider  # Ada (the admin) has no address


@pytest.fixture
def digest_time(settings):
    settings.OWED_DIGEST_WEEKDAY = 1
    settings.OWED_DIGEST_HOUR = 8


def test_the_digest_waits_for_its_day_and_hour(digest_time, people, owed_lists):
    assert digest_services.digest_send_if_due(now=MONDAY_9 - dt.timedelta(hours=2)) is None
    assert DigestPeriod.objects.count() == 0
    assert owed_lists.list_calls == 0


def test_each_person_gets_one_email_of_what_their_workspaces_owe(digest_time, people, owed_lists):
    period = digest_services.digest_send_if_due(now=MONDAY_9)
    assert (period.year, period.week, period.people) == (2026, 50, 3)
    run_ready_tasks()
    by_person = {m.to[0]: m for m in mail.outbox}
    assert set(by_person) == {"pat@example.com", "tess@example.com", "otto@example.com"}
    growth = by_person["pat@example.com"].body
    assert "Overdue: “Experiment late-1”, owner Olive Owner" in growth
    assert "ended-2" not in growth  # Payments is not Pat's
    assert "Concluded, not decided: “Experiment ended-2”" in by_person["otto@example.com"].body
    assert reverse("experiments:account-notifications") in growth
    assert set(DigestEmail.objects.values_list("state", flat=True)) == {"sent"}


def test_the_digest_goes_once_per_week_however_many_workers_try(digest_time, people, owed_lists):
    assert digest_services.digest_send_if_due(now=MONDAY_9) is not None
    assert digest_services.digest_send_if_due(now=MONDAY_9 + dt.timedelta(minutes=1)) is None
    assert digest_services.digest_send_if_due(now=MONDAY_9 + dt.timedelta(days=3)) is None
    assert DigestEmail.objects.count() == 3
    # Next week: its own digest.
    assert digest_services.digest_send_if_due(now=MONDAY_9 + dt.timedelta(days=7)) is not None
    assert DigestPeriod.objects.count() == 2


def test_a_second_worker_that_read_the_lists_meanwhile_sends_nothing(digest_time, people, owed_lists, monkeypatch):
    """Both workers found no row for the week and read the lists; the second one's claim loses."""
    real_exists = DigestPeriod.objects.filter(year=2026, week=50).exists
    assert digest_services.digest_send_if_due(now=MONDAY_9) is not None
    monkeypatch.setattr(
        digest_services.DigestPeriod.objects, "filter", lambda **kw: type("Q", (), {"exists": lambda self: False})()
    )
    assert digest_services.digest_send_if_due(now=MONDAY_9) is None
    monkeypatch.undo()
    assert real_exists()
    assert DigestEmail.objects.count() == 3
    assert AuditEntry.objects.filter(kind=EntryKind.OWED_DIGEST).count() == 0  # no webhook set


def test_one_webhook_message_per_workspace_with_something_owed(digest_time, people, owed_lists, webhook_receiver):
    ws_admin = people[2]
    webhook_on(ws_admin.memberships.get().workspace, webhook_receiver.url)
    digest_services.digest_send_if_due(now=MONDAY_9)
    run_ready_tasks()
    (message,) = webhook_receiver.received
    assert "1 decision owed this week" in message.text
    assert "Experiment late-1" in message.text
    assert NotificationDelivery.objects.filter(entry__kind=EntryKind.OWED_DIGEST).count() == 1


def test_a_person_who_turned_the_digest_off_gets_none(digest_time, people, owed_lists, client):
    pm, *_ = people
    client.force_login(pm)
    page = client.get(reverse("experiments:account-notifications"))
    assert 'name="weekly_digest" value="1" aria-describedby="digest-help" checked' in page.content.decode()
    answer = client.post(reverse("experiments:account-notifications"), {})
    assert answer.status_code == 302
    page = client.get(answer["Location"]).content.decode()
    assert "You will no longer get the weekly digest." in page
    assert "checked" not in page.split('name="weekly_digest"')[1].split(">")[0]

    digest_services.digest_send_if_due(now=MONDAY_9)
    run_ready_tasks()
    assert "pat@example.com" not in {m.to[0] for m in mail.outbox}
    assert len(mail.outbox) == 2


def test_the_notifications_page_needs_a_sign_in(client):
    answer = client.get(reverse("experiments:account-notifications"))
    assert answer.status_code == 302
    assert "/accounts/" in answer["Location"]


def test_a_failed_digest_email_is_tried_again(digest_time, people, owed_lists, monkeypatch, settings):
    monkeypatch.setattr(digest_services.email, "send", lambda **kw: ("could not connect to the mail server", True))
    digest_services.digest_send_if_due(now=MONDAY_9)
    run_ready_tasks()
    assert set(DigestEmail.objects.values_list("state", "tries")) == {("failed", 1)}
