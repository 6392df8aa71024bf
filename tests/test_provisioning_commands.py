"""add_workspace and add_member: scriptable, idempotent, loud on bad input."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from experiments.models import Membership, Role, Workspace


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_add_workspace_is_idempotent():
    args = ("add_workspace", "--name", "Growth", "--region", "eu", "--workspace-id", "42", "--project-id", "7")
    assert "Created" in run(*args)
    assert "nothing changed" in run(*args)
    ws = Workspace.objects.get()
    assert (ws.name, ws.region, ws.mixpanel_workspace_id, ws.mixpanel_project_id) == ("Growth", "eu", 42, 7)


@pytest.mark.django_db
def test_add_workspace_renames_an_existing_one():
    run("add_workspace", "--name", "Old", "--region", "us", "--workspace-id", "1")
    assert "Updated" in run("add_workspace", "--name", "New", "--region", "us", "--workspace-id", "1")
    assert Workspace.objects.get().name == "New"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "args",
    [
        ["--name", "X", "--region", "mars", "--workspace-id", "1"],
        ["--name", "X", "--region", "us", "--workspace-id", "one"],
        ["--name", "X", "--region", "us", "--workspace-id", "-3"],
        ["--name", " ", "--region", "us", "--workspace-id", "3"],
        ["--region", "us", "--workspace-id", "3"],
    ],
)
def test_add_workspace_refuses_bad_input(args):
    with pytest.raises(CommandError):
        call_command("add_workspace", *args, stdout=StringIO(), stderr=StringIO())
    assert not Workspace.objects.exists()


@pytest.mark.django_db
def test_add_member_adds_then_changes_role(django_user_model, workspace):
    django_user_model.objects.create_user("kim")
    args = ["add_member", "--workspace-id", "1001", "--user", "kim"]
    assert "added" in run(*args, "--role", "viewer")
    assert "changed" in run(*args, "--role", "concluder")
    assert Membership.objects.get(user__username="kim").role == Role.CONCLUDER


@pytest.mark.django_db
def test_add_member_needs_region_when_ambiguous(django_user_model, workspace):
    django_user_model.objects.create_user("kim")
    Workspace.objects.create(name="Twin", region="eu", mixpanel_workspace_id=1001)
    with pytest.raises(CommandError, match="--region"):
        run("add_member", "--workspace-id", "1001", "--user", "kim", "--role", "viewer")
    assert "added" in run("add_member", "--workspace-id", "1001", "--region", "eu", "--user", "kim", "--role", "admin")


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--workspace-id", "1001", "--user", "ghost", "--role", "viewer"], "No user named"),
        (["--workspace-id", "5", "--user", "kim", "--role", "viewer"], "No workspace"),
    ],
)
def test_add_member_refuses_bad_input(django_user_model, workspace, args, message):
    django_user_model.objects.create_user("kim")
    with pytest.raises(CommandError, match=message):
        run("add_member", *args)
    assert not Membership.objects.exists()


@pytest.mark.django_db
def test_add_member_refuses_unknown_role(django_user_model, workspace):
    django_user_model.objects.create_user("kim")
    with pytest.raises(CommandError):
        call_command(
            "add_member",
            "--workspace-id",
            "1001",
            "--user",
            "kim",
            "--role",
            "owner",
            stdout=StringIO(),
            stderr=StringIO(),
        )
