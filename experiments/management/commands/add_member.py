"""Give a user, or everyone in an identity-provider group, a role in a workspace from a script."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from experiments.models import Region, Role, Workspace
from experiments.services import roles as role_services


class Command(BaseCommand):
    help = (
        "Make an existing user a member of a workspace with a role (an existing membership gets the new role), "
        "or with --group make a rule: members of that identity-provider group get the role at every sign-in."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--workspace-id", required=True, type=int, help="The Mixpanel workspace id.")
        parser.add_argument("--region", choices=Region.values, help="Needed only when the id exists in two regions.")
        who = parser.add_mutually_exclusive_group(required=True)
        who.add_argument("--user", help="Username of an existing user.")
        who.add_argument("--group", help="A group name exactly as the identity provider sends it.")
        parser.add_argument("--role", required=True, choices=Role.values)

    def handle(self, *args: Any, **options: Any) -> None:
        workspace = self._workspace(options["workspace_id"], options["region"])
        if options["group"]:
            group = options["group"].strip()
            if not group:
                raise CommandError("--group must not be empty.")
            change = role_services.group_rule_set(
                group=group, workspace=workspace, role=options["role"], source=role_services.SOURCE_COMMAND
            )
            self.stdout.write(
                f"Members of group {group!r} get {options['role']} of {workspace.name} at each sign-in ({change})."
            )
            return
        user_model = get_user_model()
        try:
            user = user_model.objects.get(**{user_model.USERNAME_FIELD: options["user"]})
        except user_model.DoesNotExist:
            raise CommandError(f"No user named {options['user']!r}; create it first (manage.py createuser).") from None
        change = role_services.membership_set(
            user=user, workspace=workspace, role=options["role"], source=role_services.SOURCE_COMMAND
        )
        self.stdout.write(f"{user.get_username()} is now {options['role']} of {workspace.name} ({change}).")

    def _workspace(self, workspace_id: int, region: str | None) -> Workspace:
        workspaces = Workspace.objects.filter(mixpanel_workspace_id=workspace_id)
        if region:
            workspaces = workspaces.filter(region=region)
        found = list(workspaces[:2])
        if not found:
            raise CommandError(f"No workspace with Mixpanel id {workspace_id}; add it with add_workspace.")
        if len(found) > 1:
            raise CommandError(f"Workspace id {workspace_id} exists in several regions; pass --region.")
        return found[0]
