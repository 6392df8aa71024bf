"""Demo workspaces and logins matching the local Mixpanel stand-in (development only)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from experiments.models import ApprovalWhen, Role
from experiments.services import roles as role_services
from experiments.services import workspaces as workspace_services
from experiments.standin import DEMO_WORKSPACES

REFUSAL = (
    "seed_demo creates users with published passwords, so it only runs with DJANGO_DEBUG=1 "
    "(local development). Nothing was changed."
)

# username -> (role in every demo workspace or None, superuser, may review all conclusions, what they can do)
DEMO_USERS: dict[str, tuple[str | None, bool, bool, str]] = {
    "concluder": (Role.CONCLUDER, False, False, "browse and force conclude in every demo workspace"),
    "viewer": (Role.VIEWER, False, False, "browse every demo workspace, read-only"),
    "admin": (Role.ADMIN, False, False, "workspace admin of every demo workspace (not a superuser)"),
    "auditor": (None, False, True, "reviews every workspace's conclusions; no workspace membership"),
    "root": (None, True, False, "Django superuser (development only): everything, incl. /admin/"),
}


# The demo workspaces that show two-person approval ("concluder" asks, "admin" approves), and
# when it applies in each: to every press, or only to risky ones (its "checkout button"
# experiment has not reached its planned length).
APPROVAL_DEMO_WORKSPACES = {"Search & Discovery": ApprovalWhen.ALWAYS, "Payments": ApprovalWhen.RISKY}


def demo_password(username: str) -> str:
    return f"demo-{username}"


def ensure_user(username: str, *, superuser: bool = False, reset_password: bool = True) -> tuple[Any, str]:
    """Create or update a demo user; returns (user, "created" | "updated" | "unchanged")."""
    user_model = get_user_model()
    user, created = user_model.objects.get_or_create(username=username, defaults={"first_name": username.title()})
    changed = created
    if user.is_superuser != superuser or user.is_staff != superuser or not user.is_active:
        user.is_superuser = user.is_staff = superuser
        user.is_active = True
        changed = True
    # Each hash costs a noticeable fraction of a second: hash once for a new user,
    # and only check (then maybe hash) an existing one.
    if created or (reset_password and not user.check_password(demo_password(username))):
        user.set_password(demo_password(username))
        changed = True
    if changed:
        user.save()
    return user, "created" if created else ("updated" if changed else "unchanged")


class Command(BaseCommand):
    help = "Create the demo workspaces and demo logins used by `make run` with the stand-in (DEBUG only)."

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.DEBUG:
            raise CommandError(REFUSAL)
        review = Permission.objects.get(content_type__app_label="experiments", codename="review_all_conclusions")
        with transaction.atomic():
            workspaces = []
            for demo in DEMO_WORKSPACES:
                workspace, change = workspace_services.workspace_ensure(
                    name=demo.name,
                    region=demo.region,
                    mixpanel_workspace_id=demo.mixpanel_workspace_id,
                    mixpanel_project_id=demo.mixpanel_project_id,
                )
                workspaces.append(workspace)
                if change == "created" and workspace.name in APPROVAL_DEMO_WORKSPACES:
                    # Only when first made: an admin may turn it off in the workspace's settings.
                    workspace_services.workspace_settings_update(
                        workspace=workspace,
                        user=None,
                        actor_name="seed_demo",
                        webhook_url="",
                        remove_webhook=False,
                        email_bookmarkers=workspace.email_bookmarkers,
                        requires_approval=True,
                        approval_window_hours=workspace.approval_window_hours,
                        approval_when=APPROVAL_DEMO_WORKSPACES[workspace.name],
                    )
                    change += f", two-person approval {workspace.get_approval_when_display().lower()}"
                self.stdout.write(
                    f"Workspace {workspace.name} ({workspace.region} #{demo.mixpanel_workspace_id}): {change}"
                )
            for username, (role, superuser, reviews, _) in DEMO_USERS.items():
                user, change = ensure_user(username, superuser=superuser)
                if role is not None:
                    for workspace in workspaces:
                        role_services.membership_set(
                            user=user, workspace=workspace, role=role, source=role_services.SOURCE_COMMAND
                        )
                if reviews:
                    user.user_permissions.add(review)
                self.stdout.write(f"User {username}: {change}")

        names = ", ".join(ws.name for ws in workspaces)
        self.stdout.write("")
        self.stdout.write(self.style.SUCCESS(f"Demo logins (development only; workspaces: {names}):"))
        self.stdout.write(f"  {'username':<10} {'password':<16} what they can do")
        for username, (*_, description) in DEMO_USERS.items():
            self.stdout.write(f"  {username:<10} {demo_password(username):<16} {description}")
        if any(ws.requires_approval for ws in workspaces):
            approving = ", ".join(
                f"{ws.name} ({ws.get_approval_when_display().lower()})" for ws in workspaces if ws.requires_approval
            )
            self.stdout.write(
                f"Two-person approval is on in {approving}: log in as concluder to ask, as admin to approve."
            )
