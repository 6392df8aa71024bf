"""Reads of sealed plans: when an experiment's plan was sealed, whether and how it changed since."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from experiments.models import AuditEntry, EntryKind, SealedPlan, Workspace


@dataclass(frozen=True, slots=True)
class PlanChange:
    """One plan_changed entry: when, the fields with before and after, and Mixpanel's `modified`."""

    at: dt.datetime
    changes: tuple[dict[str, Any], ...]
    modified: str | None
    entry_id: int

    @property
    def fields(self) -> str:
        return ", ".join(str(change.get("field", "")) for change in self.changes)

    @property
    def rows(self) -> tuple[tuple[str, str, str], ...]:
        """(field, before, after) with each value as JSON text, for a table (escaped as it renders)."""
        return tuple(
            (str(change.get("field", "")), _json_text(change.get("before")), _json_text(change.get("after")))
            for change in self.changes
        )


def _json_text(value: Any) -> str:
    if value is None:
        return "—"
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)


@dataclass(frozen=True, slots=True)
class PlanStatus:
    """What the experiment page and the dialogs say about an experiment's plan."""

    sealed_at: dt.datetime
    as_first_seen: bool
    plan_hash: str
    changed_at: dt.datetime | None
    changes: tuple[PlanChange, ...]
    seal_entry_id: int

    @property
    def changed(self) -> bool:
        return self.changed_at is not None


def plan_changed_since_seal(*, workspace: Workspace, experiment_id: str) -> dt.datetime | None:
    """When the sealed plan of the experiment was last found changed; None when it never
    changed or was never sealed."""
    return (
        SealedPlan.objects.filter(workspace=workspace, experiment_id=experiment_id)
        .values_list("changed_at", flat=True)
        .first()
    )


def sealed_plans(*, workspace: Workspace, experiment_ids: Iterable[str]) -> dict[str, SealedPlan]:
    """The seals of these experiments, by id, in one query (sealedplan_unique_ws_experiment serves it)."""
    ids = list(experiment_ids)
    if not ids:
        return {}
    rows = SealedPlan.objects.filter(workspace=workspace, experiment_id__in=ids)
    return {row.experiment_id: row for row in rows}


def plan_status(*, workspace: Workspace, experiment_id: str) -> PlanStatus | None:
    """The seal of the experiment's plan and every change found since, oldest first; None when unsealed."""
    sealed = SealedPlan.objects.filter(workspace=workspace, experiment_id=experiment_id).first()
    return plan_status_of(sealed=sealed)


def plan_status_of(*, sealed: SealedPlan | None) -> PlanStatus | None:
    """plan_status of a seal already read (the page has it); its changes cost a query only when there are some."""
    if sealed is None:
        return None
    workspace, experiment_id = sealed.workspace_id, sealed.experiment_id
    changes: list[PlanChange] = []
    if sealed.changed_at is not None:
        # entry_ws_kind_seq_idx serves this read.
        entries = AuditEntry.objects.filter(
            workspace_id=workspace, kind=EntryKind.PLAN_CHANGED, experiment_id=experiment_id
        ).order_by("seq")
        for entry in entries:
            try:
                payload = json.loads(entry.payload or "{}")
            except ValueError:
                payload = {}
            listed = payload.get("changes") if isinstance(payload, dict) else None
            sealed_part = payload.get("sealed") if isinstance(payload, dict) else None
            modified = sealed_part.get("modified") if isinstance(sealed_part, dict) else None
            changes.append(
                PlanChange(
                    at=entry.created_at,
                    changes=tuple(c for c in listed or () if isinstance(c, dict)),
                    modified=modified,
                    entry_id=entry.pk,
                )
            )
    return PlanStatus(
        sealed_at=sealed.sealed_at,
        as_first_seen=sealed.as_first_seen,
        plan_hash=sealed.plan_hash,
        changed_at=sealed.changed_at,
        changes=tuple(changes),
        seal_entry_id=sealed.seal_entry_id,
    )


def plan_with_hash(*, workspace_id: int, experiment_id: str, plan_hash: str) -> dict[str, Any] | None:
    """The plan of the experiment that had `plan_hash`, as its seal or a later change recorded it
    in the chain (newest first), or None when the chain never held it."""
    if not plan_hash:
        return None
    # entry_ws_kind_seq_idx serves this read: few entries per experiment.
    entries = AuditEntry.objects.filter(
        workspace_id=workspace_id, kind__in=[EntryKind.PLAN_SEALED, EntryKind.PLAN_CHANGED], experiment_id=experiment_id
    ).order_by("-seq")
    for payload_text in entries.values_list("payload", flat=True):
        try:
            sealed = json.loads(payload_text or "{}").get("sealed")
        except (ValueError, AttributeError):
            continue
        if isinstance(sealed, dict) and sealed.get("plan_hash") == plan_hash:
            return sealed.get("plan")
    return None
