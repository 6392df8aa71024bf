"""One read-only call per configured workspace: can the dashboard reach Mixpanel?"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from experiments.management.text import table_cell
from experiments.mixpanel import client as mixpanel
from experiments.mixpanel.errors import MixpanelConfigError, MixpanelError
from experiments.models import Workspace


class Command(BaseCommand):
    help = (
        "List the experiments of every configured workspace (or one) once, and report which "
        "are reachable. Exits non-zero if any is not."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--workspace-id", type=int, help="only the workspace with this Mixpanel workspace id")

    def handle(self, *args: Any, **options: Any) -> None:
        workspaces = Workspace.objects.order_by("name", "id")
        if options["workspace_id"] is not None:
            workspaces = workspaces.filter(mixpanel_workspace_id=options["workspace_id"])
            if not workspaces:
                raise CommandError(f"No configured workspace has Mixpanel workspace id {options['workspace_id']}.")
        elif not workspaces:
            raise CommandError("No workspaces are configured yet: add one with `manage.py add_workspace`.")
        try:
            username, _ = mixpanel.read_credentials()
        except MixpanelConfigError as exc:
            raise CommandError(exc.detail) from None

        rows = []
        failures = 0
        for workspace in workspaces:
            client: mixpanel.MixpanelClient | None = None
            try:
                client = mixpanel.client_for(workspace)
                experiments = client.list_experiments(workspace.mixpanel_workspace_id)
            except MixpanelError as exc:
                failures += 1
                # Operators run this: a configuration error shows its detail (the variable to fix).
                reason = getattr(exc, "detail", None) or exc.message
                rows.append((workspace, "NO", "-", reason, client.base_url if client else ""))
            else:
                rows.append((workspace, "yes", str(len(experiments)), "", client.base_url))

        self.stdout.write(f"Service account: {username}")
        header = f"{'Workspace':<30} {'Region':<6} {'Id':>10} {'Reachable':<9} {'Experiments':>11}  Reason"
        self.stdout.write(header)
        self.stdout.write("-" * len(header))
        for workspace, ok, count, reason, _ in rows:
            line = (
                f"{table_cell(workspace.name, 30):<30} {workspace.region:<6} {workspace.mixpanel_workspace_id:>10} "
                f"{ok:<9} {count:>11}  {reason}"
            )
            self.stdout.write(line if ok == "yes" else self.style.ERROR(line))
        urls = sorted({url for *_, url in rows if url})
        if urls:
            self.stdout.write("Base URL: " + ", ".join(urls))
        if failures:
            raise CommandError(f"{failures} of {len(rows)} workspace(s) could not be read.", returncode=1)
        self.stdout.write(self.style.SUCCESS(f"All {len(rows)} workspace(s) reachable."))
