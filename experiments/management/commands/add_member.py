"""Give a user a role in a workspace from a script."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from experiments.models import Region, Role, Workspace
from experiments.services import workspaces as workspace_services


class Command(BaseCommand):
    help = "Make an existing user a member of a workspace with a role (an existing membership gets the new role)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--workspace-id", required=True, type=int, help="The Mixpanel workspace id.")
        parser.add_argument("--region", choices=Region.values, help="Needed only when the id exists in two regions.")
        parser.add_argument("--user", required=True, help="Username of an existing user.")
        parser.add_argument("--role", required=True, choices=Role.values)

    def handle(self, *args: Any, **options: Any) -> None:
        user_model = get_user_model()
        try:
            user = user_model.objects.get(**{user_model.USERNAME_FIELD: options["user"]})
        except user_model.DoesNotExist:
            raise CommandError(f"No user named {options['user']!r}; create it first (manage.py createuser).") from None
        workspaces = Workspace.objects.filter(mixpanel_workspace_id=options["workspace_id"])
        if options["region"]:
            workspaces = workspaces.filter(region=options["region"])
        found = list(workspaces[:2])
        if not found:
            raise CommandError(f"No workspace with Mixpanel id {options['workspace_id']}; add it with add_workspace.")
        if len(found) > 1:
            raise CommandError(f"Workspace id {options['workspace_id']} exists in several regions; pass --region.")
        change = workspace_services.membership_set(user=user, workspace=found[0], role=options["role"])
        self.stdout.write(f"{user.get_username()} is now {options['role']} of {found[0].name} ({change}).")
