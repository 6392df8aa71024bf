"""Resolve force-conclude attempts left open, or report conclusions made elsewhere.

    python manage.py reconcile_conclusions [--older-than 5m] [--workspace-id PK]
    python manage.py reconcile_conclusions --report [--workspace-id PK]

Reconciling only ever READS experiments from Mixpanel; the PUT is never sent again.
Exit status: 0 when every open attempt was resolved (or the report was produced
for every workspace); 1 when any attempt had to be left open or any workspace
could not be read, so a cron job or an operator notices. An attempt left open
keeps its claim, so nobody can conclude that experiment until a later run
resolves it.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from experiments.dates import format_utc
from experiments.management.text import table_cell
from experiments.mixpanel import client as mixpanel
from experiments.mixpanel.errors import MixpanelError
from experiments.models import Workspace
from experiments.selectors import conclusions as conclusion_selectors
from experiments.services import approvals as approval_services
from experiments.services import reconcile as reconcile_services

_DURATION = re.compile(r"^\s*(\d{1,9})\s*([smhd])\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> dt.timedelta:
    """ "30s", "5m", "2h" or "1d" as a timedelta; CommandError on anything else."""
    match = _DURATION.match(text or "")
    if not match:
        raise CommandError(f"--older-than must look like 30s, 5m, 2h or 1d (got {text!r}).")
    return dt.timedelta(seconds=int(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()])


class Command(BaseCommand):
    help = (
        "Resolve force-conclude attempts left 'requested' or 'unknown' by reading each experiment from "
        "Mixpanel (never re-sending), or with --report list experiments concluded outside the dashboard."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--older-than",
            default="5m",
            help=(
                "Only attempts at least this old (30s, 5m, 2h, 1d; default 5m). Attempts whose request may "
                "still be in flight (the Mixpanel deadlines plus a margin) are never judged, whatever this says."
            ),
        )
        parser.add_argument(
            "--workspace-id", type=int, help="Only this workspace (the dashboard's id, not Mixpanel's)."
        )
        parser.add_argument(
            "--report",
            action="store_true",
            help="Instead of reconciling, list experiments concluded in Mixpanel with no conclusion recorded here.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        older_than = parse_duration(options["older_than"])
        workspace_pk = options["workspace_id"]
        if workspace_pk is not None and not Workspace.objects.filter(pk=workspace_pk).exists():
            raise CommandError(f"No workspace with id {workspace_pk}.")
        if options["report"]:
            self._report(workspace_pk)
        else:
            self._reconcile(older_than, workspace_pk)

    # -- requests for approval nobody answered in time -----------------------------
    def _expire_overdue_requests(self, workspace_pk: int | None) -> None:
        """The safety net for the expiry task: close requests whose window has passed."""
        closed = [
            attempt
            for attempt in conclusion_selectors.request_list_overdue(workspace_pk=workspace_pk)
            if approval_services.approval_lapse(attempt)
        ]
        for attempt in closed:
            name = attempt.experiment_name or attempt.experiment_id
            self.stdout.write(f"Request #{attempt.pk} on {name} ({attempt.workspace.name}) expired unapproved.")

    # -- reconcile ---------------------------------------------------------------
    def _reconcile(self, older_than: dt.timedelta, workspace_pk: int | None) -> None:
        self._expire_overdue_requests(workspace_pk)
        # An attempt whose PUT may still be in flight is never judged, whatever was asked.
        older_than = max(older_than, reconcile_services.in_flight_limit())
        attempts = conclusion_selectors.attempt_list_to_reconcile(older_than=older_than, workspace_pk=workspace_pk)
        if not attempts:
            self.stdout.write(f"No open attempts older than {older_than}.")
            return
        clients: dict[int, Any] = {}
        rows = []
        left_open = 0
        for attempt in attempts:
            client = self._client(attempt.workspace, clients)
            if isinstance(client, MixpanelError):
                rows.append((attempt, attempt.state, "left open", "-", client.message))
                left_open += 1
                continue
            result = reconcile_services.conclusion_reconcile(attempt=attempt, client=client)
            left_open += 0 if result.resolved else 1
            label = {
                "applied": "applied",
                "not_applied": "not applied",
                "skipped": "skipped",
                "too_early": "too early",
            }.get(result.outcome, "left open")
            rows.append((attempt, result.previous_state, label, result.upstream_status, result.message))
        self._table(
            ["attempt", "workspace", "experiment", "was", "result", "upstream", "why"],
            [
                [f"#{a.pk}", a.workspace.name, a.experiment_name or a.experiment_id, was, label, status, why]
                for a, was, label, status, why in rows
            ],
            widths=[9, 20, 30, 10, 11, 10, 200],
        )
        resolved = len(rows) - left_open
        summary = f"{resolved} of {len(rows)} open attempt(s) resolved."
        if left_open:
            raise CommandError(f"{summary} {left_open} left open; run again later.", returncode=1)
        self.stdout.write(self.style.SUCCESS(summary))

    # -- drift report ------------------------------------------------------------
    def _report(self, workspace_pk: int | None) -> None:
        workspaces = Workspace.objects.order_by("name", "id")
        if workspace_pk is not None:
            workspaces = workspaces.filter(pk=workspace_pk)
        clients: dict[int, Any] = {}
        rows = []
        unreadable = []
        for workspace in workspaces:
            client = self._client(workspace, clients)
            try:
                if isinstance(client, MixpanelError):
                    raise client
                items = conclusion_selectors.conclusion_drift(workspace=workspace, client=client)
            except MixpanelError as exc:
                unreadable.append(f"{workspace.name}: {exc.message}")
                continue
            for item in items:
                exp = item.experiment
                rows.append(
                    [
                        workspace.name,
                        exp.name,
                        exp.id,
                        exp.status,
                        format_utc(exp.end_date),
                        exp.last_modified_by_name,
                        ", ".join(item.local_states) or "none",
                    ]
                )
        if rows:
            self._table(
                ["workspace", "experiment", "id", "status", "ended", "last modified by", "attempts here"],
                rows,
                widths=[20, 30, 36, 9, 20, 24, 40],
            )
            self.stdout.write(f"{len(rows)} experiment(s) concluded in Mixpanel with no conclusion recorded here.")
        else:
            self.stdout.write("No drift: every experiment concluded in Mixpanel has a conclusion recorded here.")
        if unreadable:
            raise CommandError("Could not read: " + "; ".join(unreadable), returncode=1)

    # -- helpers -----------------------------------------------------------------
    @staticmethod
    def _client(workspace: Workspace, clients: dict[int, Any]) -> Any:
        """The client per workspace, or the configuration error as a value (reported per row)."""
        if workspace.pk not in clients:
            try:
                clients[workspace.pk] = mixpanel.client_for(workspace)
            except MixpanelError as exc:
                clients[workspace.pk] = exc
        return clients[workspace.pk]

    def _table(self, header: list[str], rows: list[list[Any]], *, widths: list[int]) -> None:
        cells = [[table_cell(v, w) for v, w in zip(row, widths, strict=True)] for row in [header, *rows]]
        sizes = [max(len(row[i]) for row in cells) for i in range(len(header))]
        for n, row in enumerate(cells):
            self.stdout.write("  ".join(c.ljust(s) for c, s in zip(row, sizes, strict=True)).rstrip())
            if n == 0:
                self.stdout.write("  ".join("-" * s for s in sizes))
