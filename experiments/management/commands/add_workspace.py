"""Provision a workspace from a script: idempotent, loud on bad input."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from experiments.models import Region
from experiments.services import workspaces as workspace_services


class Command(BaseCommand):
    help = "Add a Mixpanel workspace to the dashboard (running it twice changes nothing)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--name", required=True)
        parser.add_argument("--region", required=True, choices=Region.values)
        parser.add_argument("--workspace-id", required=True, type=int)
        parser.add_argument("--project-id", type=int, default=None)

    def handle(self, *args: Any, **options: Any) -> None:
        name = options["name"].strip()
        if not name:
            raise CommandError("--name must not be empty.")
        for flag in ("workspace_id", "project_id"):
            if options[flag] is not None and options[flag] <= 0:
                raise CommandError(f"--{flag.replace('_', '-')} must be a positive integer.")
        workspace, change = workspace_services.workspace_ensure(
            name=name,
            region=options["region"],
            mixpanel_workspace_id=options["workspace_id"],
            mixpanel_project_id=options["project_id"],
        )
        label = f"{workspace.name} ({workspace.region} #{workspace.mixpanel_workspace_id})"
        messages = {
            "created": f"Created workspace {label}.",
            "updated": f"Updated workspace {label}.",
            "unchanged": f"Workspace {label} already exists; nothing changed.",
        }
        self.stdout.write(messages[change])
