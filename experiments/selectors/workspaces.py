"""Reads for workspace access: which workspaces a user may see, and the user's role in each."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db.models import QuerySet

from experiments.models import CONCLUDING_ROLES, Membership, Role, Workspace


@dataclass(frozen=True, slots=True)
class WorkspaceAccess:
    """A workspace as one user may see it, with that user's role in it."""

    workspace: Workspace
    role: str

    @property
    def can_conclude(self) -> bool:
        return self.role in CONCLUDING_ROLES

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN

    @property
    def role_label(self) -> str:
        return Role(self.role).label


def workspace_access(*, user: Any, workspace_pk: int) -> WorkspaceAccess | None:
    """The user's access to one workspace, or None when they are not in it.

    Superusers act as admins of every workspace. One query either way, on a unique
    key, so without the models' default ordering (Membership's would join auth_user
    and sort: a third of this call's cost, on every workspace page).
    """
    if user.is_superuser:
        workspace = Workspace.objects.filter(pk=workspace_pk).order_by().first()
        return WorkspaceAccess(workspace, Role.ADMIN) if workspace else None
    membership = (
        Membership.objects.select_related("workspace").filter(user=user, workspace_id=workspace_pk).order_by().first()
    )
    return WorkspaceAccess(membership.workspace, membership.role) if membership else None


def workspace_list_for_user(*, user: Any) -> list[WorkspaceAccess]:
    """The workspaces a user belongs to (all of them for a superuser), by name."""
    if user.is_superuser:
        return [WorkspaceAccess(ws, Role.ADMIN) for ws in Workspace.objects.order_by("name", "id")]
    memberships: QuerySet[Membership] = (
        Membership.objects.select_related("workspace").filter(user=user).order_by("workspace__name", "workspace_id")
    )
    return [WorkspaceAccess(m.workspace, m.role) for m in memberships]


def workspace_settings_wanted(*, workspace: Workspace) -> dict[str, Any]:
    """A workspace's notification and approval settings as its admins last asked for them (what
    the settings forms start from): approval with a switch-off waiting out its delay reads as
    off, although it still applies until then."""
    return {
        "email_bookmarkers": workspace.email_bookmarkers,
        "requires_approval": workspace.requires_approval and workspace.approval_off_at is None,
        "approval_window_hours": workspace.approval_window_hours,
        "approval_when": workspace.approval_when,
        **{name: getattr(workspace, name) for name in Workspace.REMINDER_FIELDS},
    }
