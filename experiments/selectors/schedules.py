"""Reads of scheduled conclusions: the live schedule of an experiment, of a page of them, of a person's workspaces."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from experiments.models import Membership, ScheduledConclusion, ScheduleState, Workspace


def live_schedule(*, workspace: Workspace, experiment_id: str) -> ScheduledConclusion | None:
    """The experiment's schedule still waiting for its time, or None (at most one exists)."""
    return (
        ScheduledConclusion.objects.filter(
            workspace=workspace, experiment_id=experiment_id, state=ScheduleState.SCHEDULED
        )
        .select_related("workspace")
        .first()
    )


def live_schedules(*, workspace: Workspace, experiment_ids: Iterable[str]) -> dict[str, ScheduledConclusion]:
    """The live schedules of these experiments, by experiment id, in one query (schedule_ws_state_idx)."""
    ids = list(experiment_ids)
    if not ids:
        return {}
    rows = ScheduledConclusion.objects.filter(workspace=workspace, state=ScheduleState.SCHEDULED, experiment_id__in=ids)
    return {row.experiment_id: row for row in rows}


def live_schedules_for_user(*, user: Any, limit: int = 20) -> list[ScheduledConclusion]:
    """The live schedules in the workspaces `user` belongs to, soonest first (the home page)."""
    workspace_ids = Membership.objects.filter(user=user).values("workspace_id")
    rows = ScheduledConclusion.objects.filter(state=ScheduleState.SCHEDULED, workspace_id__in=workspace_ids)
    return list(rows.select_related("workspace").order_by("run_at", "id")[:limit])
