"""Where people meet decisions owed: first on the home page (why, since when, owner, the action
that settles it), on each workspace card, as a tab of the workspace's list, and the switches on
the settings page."""

from __future__ import annotations

import pytest
from django.urls import reverse

from experiments.models import AttemptState, AuditEntry, EntryKind, Membership, Role
from tests.factories import make_attempt
from tests.fake_mixpanel import FakeMixpanel, install
from tests.test_owed import iso, raw

pytestmark = pytest.mark.django_db


@pytest.fixture
def owed_fake(monkeypatch):
    from django.utils import timezone

    now = timezone.now()
    return install(
        monkeypatch,
        FakeMixpanel(
            {
                1001: [
                    raw("late-1", started_days_ago=200, name="Late <b>one</b>"),
                    raw("fine-1", started_days_ago=1, name="Fine one"),
                ],
                2002: [raw("ended-2", status="concluded", end_date=iso(now.replace(year=now.year - 1)))],
            }
        ),
    )


def test_the_home_page_leads_with_what_is_owed_across_workspaces(pm_client, pm, other_workspace, owed_fake):
    Membership.objects.create(user=pm, workspace=other_workspace, role=Role.VIEWER)
    html = pm_client.get(reverse("home")).content.decode()
    section = html.split('id="decisions-owed"', 1)[1].split("</section>", 1)[0]
    assert html.index('id="decisions-owed"') < html.index("At a glance")
    assert "Late &lt;b&gt;one&lt;/b&gt;" in section  # Mixpanel's text, escaped
    assert "Fine one" not in section
    rows = section.split('<tr class="owed-row')[1:]
    assert len(rows) == 2
    ended = next(row for row in rows if "ended-2" in row or "Experiment ended-2" in row)
    assert "Concluded, not decided" in ended
    assert "Payments" in ended
    assert "Open to decide" in ended
    late = next(row for row in rows if "Late &lt;b&gt;" in row)
    assert "Overdue" in late
    assert "Olive Owner" in late
    assert "Open to conclude" in late
    assert "1 decision owed" in html.split("At a glance", 1)[1]


def test_attempts_waiting_on_a_person_are_listed_too(pm_client, workspace, pm, owed_fake):
    make_attempt(workspace=workspace, actor=pm, outcome=AttemptState.UNKNOWN, experiment_id="fine-1")
    section = pm_client.get(reverse("home")).content.decode().split('id="decisions-owed"', 1)[1]
    assert "Waiting on a person" in section
    assert "outcome unknown" in section


def test_the_list_has_a_decisions_owed_tab(pm_client, workspace, owed_fake):
    url = reverse("experiments:experiment-list", args=[workspace.pk])
    html = pm_client.get(url).content.decode()
    assert 'Decisions owed <span class="count">1</span>' in html
    tab = pm_client.get(url + "?status=owed").content.decode()
    assert "Late &lt;b&gt;one&lt;/b&gt;" in tab
    assert "Fine one" not in tab


def test_an_admin_turns_a_reminder_kind_off_and_it_is_chained(client, workspace, ws_admin):
    client.force_login(ws_admin)
    url = reverse("experiments:workspace-settings", args=[workspace.pk])
    page = client.get(url).content.decode()
    assert 'name="remind_overdue" value="1" checked' in page
    form = {
        "approval_window_hours": "24",
        "reminders_shown": "1",
        "remind_due": "1",
        "remind_undecided": "1",
        "remind_no_data": "1",
    }
    assert client.post(url, form).status_code == 302
    workspace.refresh_from_db()
    assert (workspace.remind_due, workspace.remind_overdue) == (True, False)
    entry = AuditEntry.objects.get(kind=EntryKind.SETTINGS_CHANGED)
    assert entry.payload_data["changes"] == ["reminder “remind when overdue” off"]
    assert 'name="remind_overdue" value="1">' in client.get(url).content.decode()
