"""Writes for workspaces and their members, used by the provisioning commands."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from experiments.models import GroupRule, Membership, Workspace


def workspace_ensure(
    *, name: str, region: str, mixpanel_workspace_id: int, mixpanel_project_id: int | None = None
) -> tuple[Workspace, str]:
    """Create the workspace, or bring its name and project id up to date.

    Returns the workspace and "created", "updated" or "unchanged".
    """
    with transaction.atomic():
        workspace, created = Workspace.objects.select_for_update().get_or_create(
            region=region,
            mixpanel_workspace_id=mixpanel_workspace_id,
            defaults={"name": name, "mixpanel_project_id": mixpanel_project_id},
        )
        if created:
            return workspace, "created"
        if (workspace.name, workspace.mixpanel_project_id) == (name, mixpanel_project_id):
            return workspace, "unchanged"
        workspace.name = name
        workspace.mixpanel_project_id = mixpanel_project_id
        workspace.save(update_fields=["name", "mixpanel_project_id"])
        return workspace, "updated"


def membership_set(*, user: Any, workspace: Workspace, role: str) -> str:
    """Give `user` `role` in `workspace` by hand; returns "added", "changed" or "unchanged".

    A membership set by hand is the person's own: sign-in's group rules no longer change it.
    """
    with transaction.atomic():
        membership, created = Membership.objects.select_for_update().get_or_create(
            user=user, workspace=workspace, defaults={"role": role}
        )
        if created:
            return "added"
        if membership.role == role and not membership.granted_by_group:
            return "unchanged"
        membership.role = role
        membership.granted_by_group = ""
        membership.save(update_fields=["role", "granted_by_group"])
        return "changed"


def group_rule_set(*, group: str, workspace: Workspace, role: str) -> str:
    """Members of identity-provider `group` get `role` in `workspace` from their next sign-in on.

    Returns "added", "changed" or "unchanged".
    """
    with transaction.atomic():
        rule, created = GroupRule.objects.select_for_update().get_or_create(
            group=group, workspace=workspace, defaults={"role": role}
        )
        if created:
            return "added"
        if rule.role == role:
            return "unchanged"
        rule.role = role
        rule.save(update_fields=["role"])
        return "changed"
