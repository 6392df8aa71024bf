"""Every role grant, change and removal is a role_changed entry in the audit hash chain,
however it is made: the admin site (memberships, the workspace's member rows, group rules),
the add_member command, and sign-in bringing roles in line with groups."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from django.urls import reverse

from experiments.models import AuditEntry, EntryKind, GroupRule, Membership, Role
from experiments.services import signin as signin_services
from tests.factories import assert_chain_valid

pytestmark = pytest.mark.django_db


def role_entries() -> list[tuple]:
    """(actor name, workspace name, whose, before, after, source) of each role_changed entry, in order."""
    rows = []
    for entry in AuditEntry.objects.filter(kind=EntryKind.ROLE_CHANGED).order_by("seq"):
        data = entry.payload_data
        whose = data["member"]["username"] if "member" in data else "group " + data["group_rule"]
        workspace = entry.workspace.name if entry.workspace else None
        rows.append((entry.actor_name, workspace, whose, data["role_before"], data["role_after"], data["source"]))
    return rows


@pytest.fixture
def erin(django_user_model):
    return django_user_model.objects.create_user(username="erin")


@pytest.fixture
def root(admin_user):
    admin_user.first_name = "Root"
    admin_user.save()
    return admin_user


# --- The add_member command ----------------------------------------------------------------------
def test_add_member_chains_a_grant_and_a_change_but_not_a_repeat(workspace, erin):
    def add(role: str) -> None:
        call_command("add_member", "--user", "erin", "--workspace-id", "1001", "--role", role, stdout=StringIO())

    add("viewer")
    add("admin")
    add("admin")
    assert role_entries() == [
        ("Command line", "Growth", "erin", "", "viewer", "command"),
        ("Command line", "Growth", "erin", "viewer", "admin", "command"),
    ]
    assert_chain_valid()


def test_add_member_group_chains_the_rule(workspace):
    def rule(role: str) -> None:
        call_command("add_member", "--group", "growth-pms", "--workspace-id", "1001", "--role", role, stdout=StringIO())

    rule("concluder")
    rule("viewer")
    assert role_entries() == [
        ("Command line", "Growth", "group growth-pms", "", "concluder", "command"),
        ("Command line", "Growth", "group growth-pms", "concluder", "viewer", "command"),
    ]


# --- The admin site ---------------------------------------------------------------------------------
def test_admin_membership_add_change_delete_are_chained(admin_client, root, workspace, erin):
    added = admin_client.post(
        reverse("admin:experiments_membership_add"), {"user": erin.pk, "workspace": workspace.pk, "role": "viewer"}
    )
    assert added.status_code == 302
    membership = Membership.objects.get(user=erin)
    changed = admin_client.post(
        reverse("admin:experiments_membership_change", args=[membership.pk]),
        {"user": erin.pk, "workspace": workspace.pk, "role": "admin"},
    )
    assert changed.status_code == 302
    deleted = admin_client.post(reverse("admin:experiments_membership_delete", args=[membership.pk]), {"post": "yes"})
    assert deleted.status_code == 302
    assert not Membership.objects.exists()
    by = "Root (admin)"
    assert role_entries() == [
        (by, "Growth", "erin", "", "viewer", "admin site"),
        (by, "Growth", "erin", "viewer", "admin", "admin site"),
        (by, "Growth", "erin", "admin", "", "admin site"),
    ]
    assert AuditEntry.objects.filter(kind=EntryKind.ROLE_CHANGED).first().actor == root
    assert_chain_valid()


def test_admin_bulk_delete_of_memberships_chains_each(admin_client, root, workspace, other_workspace, erin):
    for ws in (workspace, other_workspace):
        Membership.objects.create(user=erin, workspace=ws, role=Role.VIEWER)
    response = admin_client.post(
        reverse("admin:experiments_membership_changelist"),
        {
            "action": "delete_selected",
            "_selected_action": list(Membership.objects.values_list("pk", flat=True)),
            "post": "yes",
        },
    )
    assert response.status_code == 302
    assert not Membership.objects.exists()
    assert sorted(role_entries()) == [
        ("Root (admin)", "Growth", "erin", "viewer", "", "admin site"),
        ("Root (admin)", "Payments", "erin", "viewer", "", "admin site"),
    ]


def test_admin_workspace_member_rows_are_chained(admin_client, root, workspace, erin, pm):
    pat_row = Membership.objects.get(user=pm)
    url = reverse("admin:experiments_workspace_change", args=[workspace.pk])
    form = {
        "name": "Growth",
        "region": "us",
        "mixpanel_workspace_id": "1001",
        "mixpanel_project_id": "77",
        "approval_window_hours": "24",
        "approval_when": "always",
        "memberships-TOTAL_FORMS": "2",
        "memberships-INITIAL_FORMS": "1",
        "memberships-MIN_NUM_FORMS": "0",
        "memberships-MAX_NUM_FORMS": "1000",
        # Pat's row: made admin, then in a second save removed; Erin's row: added.
        "memberships-0-id": str(pat_row.pk),
        "memberships-0-workspace": str(workspace.pk),
        "memberships-0-user": str(pm.pk),
        "memberships-0-role": "admin",
        "memberships-1-workspace": str(workspace.pk),
        "memberships-1-user": str(erin.pk),
        "memberships-1-role": "viewer",
    }
    response = admin_client.post(url, form)
    assert response.status_code == 302, response.content.decode()[:2000]
    erin_row = Membership.objects.get(user=erin)
    form.update(
        {
            "memberships-INITIAL_FORMS": "2",
            "memberships-0-DELETE": "on",
            "memberships-1-id": str(erin_row.pk),
        }
    )
    assert admin_client.post(url, form).status_code == 302
    assert list(Membership.objects.values_list("user__username", "role")) == [("erin", "viewer")]
    assert role_entries() == [
        ("Root (admin)", "Growth", "pat", "concluder", "admin", "admin site"),
        ("Root (admin)", "Growth", "erin", "", "viewer", "admin site"),
        ("Root (admin)", "Growth", "pat", "admin", "", "admin site"),
    ]


def test_admin_group_rule_add_change_delete_are_chained(admin_client, root, workspace):
    form = {"group": "growth", "workspace": workspace.pk, "role": "viewer"}
    assert admin_client.post(reverse("admin:experiments_grouprule_add"), form).status_code == 302
    rule = GroupRule.objects.get()
    change_url = reverse("admin:experiments_grouprule_change", args=[rule.pk])
    assert admin_client.post(change_url, {**form, "role": "concluder"}).status_code == 302
    delete_url = reverse("admin:experiments_grouprule_delete", args=[rule.pk])
    assert admin_client.post(delete_url, {"post": "yes"}).status_code == 302
    assert role_entries() == [
        ("Root (admin)", "Growth", "group growth", "", "viewer", "admin site"),
        ("Root (admin)", "Growth", "group growth", "viewer", "concluder", "admin site"),
        ("Root (admin)", "Growth", "group growth", "concluder", "", "admin site"),
    ]
    assert_chain_valid()


def test_a_role_given_in_the_admin_to_a_rule_granted_membership_makes_it_hand_given(admin_client, root, workspace):
    GroupRule.objects.create(group="growth", workspace=workspace, role=Role.VIEWER)
    from django.contrib.auth import get_user_model

    fay = get_user_model().objects.create_user(username="fay")
    signin_services.roles_sync_from_groups(user=fay, groups=["growth"], source="sso", auditor_groups=[])
    membership = Membership.objects.get(user=fay)
    url = reverse("admin:experiments_membership_change", args=[membership.pk])
    assert admin_client.post(url, {"user": fay.pk, "workspace": workspace.pk, "role": "admin"}).status_code == 302
    membership.refresh_from_db()
    assert (membership.role, membership.granted_by_group) == ("admin", "")


# --- Sign-in ------------------------------------------------------------------------------------------
def test_sign_in_sync_chains_grants_changes_and_removals_with_their_group(workspace, other_workspace, erin):
    GroupRule.objects.create(group="a", workspace=workspace, role=Role.VIEWER)
    GroupRule.objects.create(group="b", workspace=workspace, role=Role.CONCLUDER)
    GroupRule.objects.create(group="pay", workspace=other_workspace, role=Role.ADMIN)

    def sync(*groups: str, source: str = "sso") -> None:
        signin_services.roles_sync_from_groups(user=erin, groups=groups, source=source, auditor_groups=["auditors"])

    sync("a", "pay", "auditors")
    sync("b", "pay", source="proxy header")
    sync()
    assert role_entries() == [
        ("Sign-in (SSO groups)", "Growth", "erin", "", "viewer", "sso"),
        ("Sign-in (SSO groups)", "Payments", "erin", "", "admin", "sso"),
        ("Sign-in (SSO groups)", None, "erin", "", "auditor", "sso"),
        ("Sign-in proxy (groups header)", "Growth", "erin", "viewer", "concluder", "proxy header"),
        ("Sign-in proxy (groups header)", None, "erin", "auditor", "", "proxy header"),
        ("Sign-in (SSO groups)", "Growth", "erin", "concluder", "", "sso"),
        ("Sign-in (SSO groups)", "Payments", "erin", "admin", "", "sso"),
    ]
    first = AuditEntry.objects.filter(kind=EntryKind.ROLE_CHANGED).order_by("seq").first()
    assert first.payload_data["via_group"] == "a"
    assert first.actor is None
    assert_chain_valid()
    out = StringIO()
    call_command("verify_audit", stdout=out)
    assert "Audit chain OK" in out.getvalue()


# --- Accounts in the admin site: superuser, review-all, deletion -----------------------------------
def _user_form(user, **changes) -> dict:
    form = {
        "username": user.username,
        "first_name": user.first_name,
        "last_name": "",
        "email": "",
        "is_active": "on",
        "date_joined_0": "2026-01-01",
        "date_joined_1": "00:00:00",
        "initial-date_joined_0": "2026-01-01",
        "initial-date_joined_1": "00:00:00",
        "password": user.password,
        **changes,
    }
    return {key: value for key, value in form.items() if value is not None}


def test_admin_making_someone_superuser_or_auditor_is_chained(admin_client, root, erin):
    from django.contrib.auth.models import Group, Permission

    url = reverse("admin:auth_user_change", args=[erin.pk])
    review = Permission.objects.get(codename="review_all_conclusions")
    assert admin_client.post(url, _user_form(erin, is_staff="on", is_superuser="on")).status_code == 302
    assert admin_client.post(url, _user_form(erin, user_permissions=str(review.pk))).status_code == 302
    auditors = Group.objects.create(name="Reviewers")
    auditors.permissions.add(review)
    assert admin_client.post(url, _user_form(erin, groups=str(auditors.pk))).status_code == 302  # still auditor
    assert admin_client.post(url, _user_form(erin)).status_code == 302
    assert role_entries() == [
        ("Root (admin)", None, "erin", "", "superuser", "admin site"),
        ("Root (admin)", None, "erin", "superuser", "", "admin site"),
        ("Root (admin)", None, "erin", "", "auditor", "admin site"),
        ("Root (admin)", None, "erin", "auditor", "", "admin site"),
    ]
    assert_chain_valid()


def test_admin_deleting_an_account_chains_the_roles_it_held(admin_client, root, workspace, erin):
    Membership.objects.create(user=erin, workspace=workspace, role=Role.CONCLUDER)
    response = admin_client.post(reverse("admin:auth_user_delete", args=[erin.pk]), {"post": "yes"})
    assert response.status_code == 302
    assert not Membership.objects.exists()
    assert role_entries() == [("Root (admin)", "Growth", "erin", "concluder", "", "admin site")]
