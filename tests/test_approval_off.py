"""Turning two-person approval off is never quiet or quick: it takes effect APPROVAL_OFF_DELAY_HOURS
after an admin saves it (the team is told at once, any admin can keep approval on meanwhile),
and a conclusion pressed while approval is off says so on the attempt and in the chain."""

from __future__ import annotations

import datetime as dt

import pytest
from django.urls import reverse

from experiments.models import AttemptState, AuditEntry, ConclusionAttempt, EntryKind, NotificationDelivery, Workspace
from experiments.services import approvals
from experiments.services import workspaces as workspace_services
from tests.factories import _clock_shifted, assert_chain_valid
from tests.fake_mixpanel import FakeMixpanel, raw_experiment
from tests.test_services_force_conclude import conclude
from tests.test_tasks import make_due, run_ready_tasks, waiting

pytestmark = pytest.mark.django_db

SWITCH_OFF = "experiments.services.workspaces.approval_switch_off"


@pytest.fixture
def admins(ws_admin, django_user_model, workspace, approving):
    """Ada (who turns approval off) and Bea, both admins with an address; approval is on."""
    from experiments.models import Membership, Role

    ws_admin.email = "ada@example.com"
    ws_admin.save()
    bea = django_user_model.objects.create_user("bea", email="bea@example.com", first_name="Bea")
    Membership.objects.create(user=bea, workspace=workspace, role=Role.ADMIN)
    return ws_admin, bea


def settings_page(workspace) -> str:
    return reverse("experiments:workspace-settings", args=[workspace.pk])


def save(client, workspace, **fields) -> None:
    data = {"approval_window_hours": "24", **fields}
    assert client.post(settings_page(workspace), data).status_code == 302


def switch_off_tasks():
    return [t for t in waiting() if t.task_path == SWITCH_OFF]


def fresh(workspace) -> Workspace:
    return Workspace.objects.get(pk=workspace.pk)


def test_one_admin_cannot_turn_approval_off_conclude_alone_and_turn_it_back_on(client, workspace, admins, pm):
    """Before, the admin's press went straight to Mixpanel between the two saves, and nobody heard."""
    ada, _ = admins
    client.force_login(ada)
    save(client, workspace)  # the box unticked: approval off
    workspace = fresh(workspace)
    assert workspace.requires_approval is True
    assert workspace.approval_off_at > workspace_services.timezone.now() + dt.timedelta(hours=23)

    fake = FakeMixpanel()
    outcome = conclude(workspace, pm, fake)
    assert outcome.state == AttemptState.AWAITING_APPROVAL  # still needs a second person
    assert fake.puts == []

    save(client, workspace, requires_approval="1")  # and back on
    assert fresh(workspace).approval_off_at is None
    changes = [e.payload_data["changes"] for e in AuditEntry.objects.filter(kind=EntryKind.SETTINGS_CHANGED)]
    assert changes[-2][0].startswith("two-person approval turns off at ")
    assert changes[-1][0].startswith("two-person approval stays on: its switch-off at ")
    # The team heard of the switch-off the moment it was asked for.
    told = NotificationDelivery.objects.filter(entry__payload__contains="turns off at").values_list("recipient")
    assert sorted(r for (r,) in told) == ["ada@example.com", "bea@example.com"]

    # Its task finds the switch-off cancelled, even once due.
    (task,) = switch_off_tasks()
    with _clock_shifted(dt.timedelta(hours=25)):
        make_due(task)
        assert [r.return_value for r in run_ready_tasks(("default",)) if r.task_path == SWITCH_OFF] == ["cancelled"]
    assert fresh(workspace).requires_approval is True
    assert_chain_valid()


def test_a_requester_who_withdraws_and_presses_again_during_the_delay_still_needs_approval(
    client, workspace, admins, pm, second
):
    fake = FakeMixpanel()
    waiting_request = conclude(workspace, pm, fake).attempt
    client.force_login(admins[0])
    save(client, workspace)
    approvals.attempt_review(attempt=waiting_request, user=pm, decision=approvals.REJECT, note="", client=fake)
    again = conclude(fresh(workspace), pm, fake)
    assert again.state == AttemptState.AWAITING_APPROVAL
    assert fake.puts == []


def test_approval_turns_off_when_the_delay_is_over_and_a_conclusion_then_says_so(
    client, workspace, admins, pm, settings
):
    ada, _ = admins
    client.force_login(ada)
    save(client, workspace)
    off_at = fresh(workspace).approval_off_at
    (task,) = switch_off_tasks()
    assert task.run_after == off_at
    assert task.queue_name == "default"

    # Early (a worker clock behind the database's): nothing yet, it looks again when due.
    make_due(task)
    assert [r.return_value for r in run_ready_tasks(("default",))] == ["not due"]
    assert fresh(workspace).requires_approval is True
    (later,) = switch_off_tasks()
    assert later.run_after == off_at

    with _clock_shifted(dt.timedelta(hours=settings.APPROVAL_OFF_DELAY_HOURS, seconds=1)):
        make_due(later)
        assert [r.return_value for r in run_ready_tasks(("default",))] == ["off"]
        workspace = fresh(workspace)
        assert (workspace.requires_approval, workspace.approval_off_at) == (False, off_at)
        last = AuditEntry.objects.filter(kind=EntryKind.SETTINGS_CHANGED).order_by("seq").last()
        assert last.actor_name == "scheduled switch-off"
        assert last.payload_data["changes"] == ["two-person approval turned off, as Ada (ada) asked"]
        assert last.payload_data["loosened"] == ["two-person approval is now off: one person can force conclude alone"]
        assert NotificationDelivery.objects.filter(entry=last).count() == 2  # both admins, told again

        fake = FakeMixpanel([raw_experiment()])
        outcome = conclude(workspace, pm, fake)
    assert outcome.ok, outcome.message
    attempt = ConclusionAttempt.objects.get(pk=outcome.attempt.pk)
    assert attempt.approval_off_since == off_at
    requested = AuditEntry.objects.get(attempt=attempt, kind=EntryKind.CONCLUSION_REQUESTED)
    assert requested.payload_data["attempt"]["approval_off_since"] is not None
    page = client.get(reverse("experiments:audit-detail", args=[attempt.pk])).content.decode()
    assert "an admin had turned two-person approval off in this workspace" in page
    assert_chain_valid()


def test_a_conclusion_where_approval_was_never_on_says_nothing_of_it(workspace, pm):
    outcome = conclude(workspace, pm, FakeMixpanel())
    assert outcome.ok
    assert ConclusionAttempt.objects.get().approval_off_since is None


def test_turning_approval_on_again_after_it_went_off_is_immediate(client, workspace, admins, pm, settings):
    client.force_login(admins[0])
    save(client, workspace)
    with _clock_shifted(dt.timedelta(hours=settings.APPROVAL_OFF_DELAY_HOURS, seconds=1)):
        make_due(switch_off_tasks()[0])
        run_ready_tasks(("default",))
    assert fresh(workspace).requires_approval is False
    save(client, workspace, requires_approval="1")
    workspace = fresh(workspace)
    assert (workspace.requires_approval, workspace.approval_off_at) == (True, None)
    assert conclude(workspace, pm, FakeMixpanel()).state == AttemptState.AWAITING_APPROVAL
    assert_chain_valid()


def test_the_settings_page_states_the_delay_and_a_planned_switch_off(client, workspace, admins, settings):
    settings.APPROVAL_OFF_DELAY_HOURS = 12
    client.force_login(admins[0])
    page = client.get(settings_page(workspace)).content.decode()
    assert "Choosing Never takes effect 12 hours after it is saved" in page
    assert 'id="settings-approval-pending"' not in page
    save(client, workspace)
    page = client.get(settings_page(workspace)).content.decode()
    assert 'id="settings-approval-pending"' in page
    assert "Until then it still applies (always)" in page
    # The policy the admins asked for is shown chosen: Never.
    assert 'name="approval_policy" value="never" aria-describedby="settings-approval-never" checked>' in page
    # Saving another setting leaves the switch-off planned.
    save(client, workspace, email_bookmarkers="1")
    assert fresh(workspace).approval_off_at is not None


def test_saving_the_admin_form_for_another_field_leaves_a_planned_switch_off(
    client, workspace, admins, django_user_model
):
    from tests.test_settings_one_path import admin_form

    client.force_login(admins[0])
    save(client, workspace)
    planned = fresh(workspace).approval_off_at
    root = django_user_model.objects.create_superuser("root", password="x")
    client.force_login(root)
    url = reverse("admin:experiments_workspace_change", args=[workspace.pk])
    data = admin_form(fresh(workspace), name="Growth team", requires_approval=None)
    assert client.post(url, data).status_code == 302
    workspace = fresh(workspace)
    assert (workspace.name, workspace.requires_approval, workspace.approval_off_at) == ("Growth team", True, planned)
    # Ticking approval there keeps it on, as on the Settings page.
    assert client.post(url, {**data, "requires_approval": "on"}).status_code == 302
    assert fresh(workspace).approval_off_at is None
    assert_chain_valid()
