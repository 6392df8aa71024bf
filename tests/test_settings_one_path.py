"""One path for a workspace's notification and approval settings: the admin site goes through
the same service as the Settings page (chained, told, bounded), the database refuses a window
outside 1 to 168 hours, and verify_audit finds any setting changed around the chain."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import IntegrityError, connection, transaction
from django.urls import reverse

from experiments.models import AuditEntry, EntryKind, NotificationDelivery, Region, Workspace
from experiments.services import workspaces as workspace_services
from tests.factories import assert_chain_valid

pytestmark = pytest.mark.django_db


@pytest.fixture
def root(django_user_model):
    return django_user_model.objects.create_superuser(
        "root", email="root@example.com", password="pw-root", first_name="Root"
    )


@pytest.fixture
def admin_site(client, root):
    client.force_login(root)
    return client


def admin_form(workspace, **changes) -> dict[str, str]:
    form = {
        "name": workspace.name,
        "region": workspace.region,
        "mixpanel_workspace_id": str(workspace.mixpanel_workspace_id),
        "mixpanel_project_id": str(workspace.mixpanel_project_id or ""),
        "approval_window_hours": str(workspace.approval_window_hours),
        "approval_when": workspace.approval_when,
        "memberships-TOTAL_FORMS": "0",
        "memberships-INITIAL_FORMS": "0",
        "memberships-MIN_NUM_FORMS": "0",
        "memberships-MAX_NUM_FORMS": "1000",
    }
    if workspace.requires_approval:
        form["requires_approval"] = "on"
    if workspace.email_bookmarkers:
        form["email_bookmarkers"] = "on"
    form.update({name: "on" for name in Workspace.REMINDER_FIELDS if getattr(workspace, name)})
    form.update(changes)
    return {key: value for key, value in form.items() if value is not None}


def settings_entries(workspace) -> list[AuditEntry]:
    return list(AuditEntry.objects.filter(workspace=workspace, kind=EntryKind.SETTINGS_CHANGED).order_by("seq"))


def verify() -> str:
    out = StringIO()
    call_command("verify_audit", stdout=out)
    return out.getvalue()


# --- The admin site ---------------------------------------------------------------------------


def test_the_admin_form_changes_approval_through_the_service(admin_site, workspace, ws_admin):
    """Before, the admin site wrote requires_approval and the window with no chain entry, and
    told nobody; verify_audit still said OK."""
    ws_admin.email = "ada@example.com"
    ws_admin.save()
    workspace_services.workspace_settings_update(
        workspace=workspace,
        user=ws_admin,
        webhook_url="",
        remove_webhook=False,
        email_bookmarkers=False,
        requires_approval=True,
        approval_window_hours=48,
    )
    url = reverse("admin:experiments_workspace_change", args=[workspace.pk])
    response = admin_site.post(url, admin_form(workspace, requires_approval=None, approval_window_hours="12"))
    assert response.status_code == 302, response.content.decode()[:3000]

    fresh = Workspace.objects.get(pk=workspace.pk)
    # Approval stays on until its switch-off's delay is over, as from the Settings page.
    assert (fresh.requires_approval, fresh.approval_window_hours) == (True, 12)
    assert fresh.approval_off_at is not None
    last = settings_entries(workspace)[-1]
    assert last.actor_name == "Root (root)"
    assert last.payload_data["changes"][0].startswith("two-person approval turns off at ")
    assert last.payload_data["changes"][1] == "approval window 48 h → 12 h"
    assert last.payload_data["settings"]["approval_off_at"] is not None
    # Loosening is told, whoever does it and wherever.
    told = NotificationDelivery.objects.filter(entry=last).values_list("recipient", flat=True)
    assert list(told) == ["ada@example.com"]
    assert_chain_valid()


def test_a_workspace_added_in_the_admin_site_with_approval_is_chained(admin_site):
    form = {
        "name": "Search",
        "region": "in",
        "mixpanel_workspace_id": "3003",
        "mixpanel_project_id": "",
        "approval_window_hours": "72",
        "requires_approval": "on",
        "approval_when": "always",
        # The reminders, checked as the add form starts them.
        **dict.fromkeys(Workspace.REMINDER_FIELDS, "on"),
        "memberships-TOTAL_FORMS": "0",
        "memberships-INITIAL_FORMS": "0",
        "memberships-MIN_NUM_FORMS": "0",
        "memberships-MAX_NUM_FORMS": "1000",
    }
    response = admin_site.post(reverse("admin:experiments_workspace_add"), form)
    assert response.status_code == 302, response.content.decode()[:3000]
    workspace = Workspace.objects.get(name="Search")
    assert (workspace.requires_approval, workspace.approval_window_hours) == (True, 72)
    (entry,) = settings_entries(workspace)
    assert entry.payload_data["changes"] == ["two-person approval required", "approval window 24 h → 72 h"]
    assert_chain_valid()


@pytest.mark.parametrize("hours", ["0", "169", "32767"])
def test_the_admin_form_refuses_a_window_outside_1_to_168_hours(admin_site, workspace, hours):
    url = reverse("admin:experiments_workspace_change", args=[workspace.pk])
    response = admin_site.post(url, admin_form(workspace, approval_window_hours=hours))
    assert response.status_code == 200
    assert "errornote" in response.content.decode()
    assert Workspace.objects.get(pk=workspace.pk).approval_window_hours == 24
    assert settings_entries(workspace) == []


def test_the_admin_form_saving_other_fields_chains_nothing(admin_site, workspace):
    url = reverse("admin:experiments_workspace_change", args=[workspace.pk])
    assert admin_site.post(url, admin_form(workspace, name="Growth team")).status_code == 302
    assert Workspace.objects.get(pk=workspace.pk).name == "Growth team"
    assert settings_entries(workspace) == []
    assert_chain_valid()


# --- The database and the service ---------------------------------------------------------------


@pytest.mark.parametrize("hours", [0, 169, 32767])
def test_the_database_refuses_a_window_outside_1_to_168_hours(workspace, hours):
    with pytest.raises(IntegrityError), transaction.atomic():
        Workspace.objects.filter(pk=workspace.pk).update(approval_window_hours=hours)
    with pytest.raises(IntegrityError), transaction.atomic():
        Workspace.objects.create(name="x", region=Region.EU, mixpanel_workspace_id=5, approval_window_hours=hours)


@pytest.mark.parametrize("hours", [0, 169])
def test_the_service_refuses_a_window_outside_1_to_168_hours(workspace, ws_admin, hours):
    with pytest.raises(ValueError, match="1 to 168 hours"):
        workspace_services.workspace_settings_update(
            workspace=workspace,
            user=ws_admin,
            webhook_url="",
            remove_webhook=False,
            email_bookmarkers=False,
            requires_approval=True,
            approval_window_hours=hours,
        )
    assert settings_entries(workspace) == []


# --- verify_audit ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("column", "value", "shown"),
    [
        ("requires_approval", True, "requires_approval is True"),
        ("approval_window_hours", 100, "approval_window_hours is 100"),
        ("approval_when", "risky", "approval_when is 'risky'"),
        ("email_bookmarkers", True, "email_bookmarkers is True"),
        ("webhook_url_hint", "https://elsewhere.example/…", "webhook is 'https://elsewhere.example/…'"),
    ],
)
def test_verify_audit_finds_a_setting_changed_around_the_chain(workspace, ws_admin, column, value, shown):
    workspace_services.workspace_settings_update(
        workspace=workspace,
        user=ws_admin,
        webhook_url="https://hooks.example.com/services/T0/B0/abcdefghijklmnop",
        remove_webhook=False,
        email_bookmarkers=False,
        requires_approval=False,
        approval_window_hours=24,
    )
    assert "every workspace's settings agree" in verify()
    Workspace.objects.filter(pk=workspace.pk).update(**{column: value})
    with pytest.raises(CommandError) as failed:
        verify()
    message = str(failed.value)
    assert f"workspace #{workspace.pk} (Growth): {shown}" in message
    assert "its last settings change (seq 1) says" in message


def test_verify_audit_compares_a_workspace_never_changed_with_the_defaults(workspace, other_workspace):
    assert "every workspace's settings agree" in verify()
    Workspace.objects.filter(pk=other_workspace.pk).update(requires_approval=True)
    with pytest.raises(
        CommandError, match=r"workspace #\d+ \(Payments\): requires_approval is True, no settings change"
    ):
        verify()


# --- Upgrading: settings changed before they were checked ---------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_migration_brings_windows_into_range_and_chains_settings_as_found():
    """Windows of 0 and 32,767 hours (the admin site accepted them) and approval switched on in
    the admin site (no entry) are found by the migration: the windows brought into 1 to 168
    hours, and one entry per such workspace records the settings as found."""
    from django.db.migrations.executor import MigrationExecutor

    before, after = [("experiments", "0013_force_conclude_and_controls")], [("experiments", "0014_governance")]
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    old = executor.loader.project_state(before).apps
    OldWorkspace = old.get_model("experiments", "Workspace")
    zero = OldWorkspace.objects.create(name="Zero", region="us", mixpanel_workspace_id=1, approval_window_hours=0)
    huge = OldWorkspace.objects.create(
        name="Huge", region="us", mixpanel_workspace_id=2, approval_window_hours=32767, requires_approval=True
    )
    plain = OldWorkspace.objects.create(name="Plain", region="us", mixpanel_workspace_id=3)

    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(after)
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())

    assert dict(Workspace.objects.values_list("name", "approval_window_hours")) == {"Zero": 1, "Huge": 168, "Plain": 24}
    zero_entry, huge_entry = AuditEntry.objects.order_by("seq")
    assert (zero_entry.workspace_id, huge_entry.workspace_id) == (zero.pk, huge.pk)
    assert zero_entry.actor_name == "migration 0014 (settings as found)"
    assert zero_entry.payload_data["changes"] == [
        "approval window 0 h → 1 h (outside 1 to 168 h, which the database now refuses)",
        "settings recorded as found, changed without an audit entry: approval_window_hours: 24 → 1",
    ]
    assert "requires_approval: False → True" in huge_entry.payload_data["changes"][1]
    assert huge_entry.payload_data["settings"]["requires_approval"] is True
    assert not AuditEntry.objects.filter(workspace_id=plain.pk).exists()
    assert_chain_valid()
