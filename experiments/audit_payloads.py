"""The one payload shape of each attempt's audit entry kind (force conclude and decision), and
of a workspace's settings as its settings_changed entries keep them.

The service writes these, the attempt page reads them, verify_audit checks the
ConclusionAttempt rows against them, and the test factories write through the
service's writer, so there is exactly one shape of each to read.

Every entry that moves an attempt carries, under "attempt", the values of the
attempt's columns it set, as they were written. The row is a projection of the
entries: verify_audit folds these in seq order and compares every column an
auditor reads (screens and export). A late answer carries no "attempt": it moves
nothing.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from types import SimpleNamespace
from typing import Any

from experiments.auditlog import canonical_json, format_timestamp
from experiments.mixpanel.errors import MixpanelError
from experiments.mixpanel.experiment import Experiment
from experiments.models import AttemptAction, AttemptState, EntryKind, Workspace

ATTEMPT = "attempt"
# Columns the requested entry sets (they never change after insert).
REQUEST_COLUMNS = (
    "created_at",
    "reason_category",
    "reason_text",
    "end_date",
    "request_body",
    "state",
    "expires_at",
    "approval_off_since",
    "experiment_modified",
    "plan_hash",
    "approval_rules",
)
# Columns an outcome or a reconciliation sets.
OUTCOME_COLUMNS = ("state", "failure_reason", "http_status", "duration_ms", "finished_at")
# Columns an approval, a rejection or an expiry of a request sets (a rejection and an
# expiry close the attempt, so they set OUTCOME_COLUMNS too).
REVIEW_COLUMNS = ("state", "reviewer_id", "reviewer_name", "review_note", "reviewed_at")
# Columns every entry of an attempt carries as its own (hashed) fields.
ENTRY_COLUMNS = ("workspace_id", "actor_id", "actor_name", "experiment_id", "experiment_name")

# Stored upstream bodies and snapshots are capped so one odd answer cannot bloat
# the audit table; a cut value says so ("truncated": true).
SNAPSHOT_MAX_BYTES = 256 * 1024
MSG_UNEXPECTED = "an unexpected error ({kind})"


# The entry kind of each step, per action; the step names are AttemptState values plus
# "requested", "reconciled" and "late".
ENTRY_KINDS = {
    AttemptAction.CONCLUSION: {
        AttemptState.REQUESTED: EntryKind.CONCLUSION_REQUESTED,
        AttemptState.SUCCEEDED: EntryKind.CONCLUSION_SUCCEEDED,
        AttemptState.FAILED: EntryKind.CONCLUSION_FAILED,
        AttemptState.UNKNOWN: EntryKind.CONCLUSION_UNKNOWN,
        "reconciled": EntryKind.CONCLUSION_RECONCILED,
        "late": EntryKind.CONCLUSION_LATE_ANSWER,
        # Two-person approval: a press that waits for a second person, and how that ends.
        AttemptState.AWAITING_APPROVAL: EntryKind.APPROVAL_REQUESTED,
        "approved": EntryKind.APPROVAL_APPROVED,
        AttemptState.REJECTED: EntryKind.APPROVAL_REJECTED,
        AttemptState.EXPIRED: EntryKind.APPROVAL_EXPIRED,
        AttemptState.WITHDRAWN: EntryKind.APPROVAL_WITHDRAWN,
        AttemptState.STALE: EntryKind.APPROVAL_STALE,
    },
    AttemptAction.DECISION: {
        AttemptState.REQUESTED: EntryKind.DECISION_REQUESTED,
        AttemptState.SUCCEEDED: EntryKind.DECISION_SUCCEEDED,
        AttemptState.FAILED: EntryKind.DECISION_FAILED,
        AttemptState.UNKNOWN: EntryKind.DECISION_UNKNOWN,
        "reconciled": EntryKind.DECISION_RECONCILED,
        "late": EntryKind.DECISION_LATE_ANSWER,
        # A request for approval of a decision closes as stale under the same entry kind.
        AttemptState.STALE: EntryKind.APPROVAL_STALE,
        # A decision that needs a second person goes through the same approval steps; the
        # request's hashed "action" says which kind of attempt it is.
        AttemptState.AWAITING_APPROVAL: EntryKind.APPROVAL_REQUESTED,
        "approved": EntryKind.APPROVAL_APPROVED,
        AttemptState.REJECTED: EntryKind.APPROVAL_REJECTED,
        AttemptState.EXPIRED: EntryKind.APPROVAL_EXPIRED,
        AttemptState.WITHDRAWN: EntryKind.APPROVAL_WITHDRAWN,
    },
}


def entry_kind(action: str, step: str) -> str:
    """The audit entry kind of `step` for an attempt of `action`."""
    return ENTRY_KINDS[action][step]


def as_json(value: Any) -> Any:
    """A value as it reads back from a payload (datetimes as our UTC text, tuples as lists)."""
    if value is None or isinstance(value, (str, int, float)):
        return value
    if isinstance(value, dt.datetime):
        return format_timestamp(value)
    return json.loads(canonical_json(value))


def columns(attempt: Any, names: Iterable[str]) -> dict[str, Any]:
    """The attempt's values of `names`, in payload form."""
    return {name: as_json(getattr(attempt, name)) for name in names}


def capped_text(text: str) -> tuple[str, bool]:
    """`text` cut to SNAPSHOT_MAX_BYTES of UTF-8 (never mid-character), and whether it was cut."""
    data = text.encode("utf-8")
    if len(data) <= SNAPSHOT_MAX_BYTES:
        return text, False
    return data[:SNAPSHOT_MAX_BYTES].decode("utf-8", errors="ignore"), True


def snapshot(experiment: Experiment | None) -> Any:
    """An experiment's JSON as received when it fits, else {"truncated": true, "text": cut text}."""
    if experiment is None:
        return None
    raw = dict(experiment.raw)
    text, cut = capped_text(canonical_json(raw))
    return {"truncated": True, "text": text} if cut else raw


def summary(experiment: Experiment | None) -> dict[str, Any] | None:
    """The key fields an auditor reads first; the full JSON sits beside it."""
    if experiment is None:
        return None
    return {
        "id": experiment.id,
        "name": experiment.name,
        "status": experiment.status,
        "start_date": as_json(experiment.start_date),
        "end_date": as_json(experiment.end_date),
        "variants": experiment.variants_count,
        "exposures": experiment.exposures_total,
    }


def error_data(exc: BaseException | None) -> dict[str, Any] | None:
    """An exception as audit data. The client's messages are written to be safe and
    readable and are kept as they are; anything else is named by its type only,
    since its text could carry anything."""
    if exc is None:
        return None
    if isinstance(exc, MixpanelError):
        excerpt, cut = capped_text(exc.body_excerpt or "")
        return {
            "type": type(exc).__name__,
            "message": exc.message,
            "http_status": exc.http_status,
            "body_excerpt": excerpt,
            "body_excerpt_truncated": cut,
            "retry_after": exc.retry_after,
            "outcome_unknown": exc.outcome_unknown,
        }
    return {"type": type(exc).__name__, "message": MSG_UNEXPECTED.format(kind=type(exc).__name__)}


def answer(*, http_status: int, body: str, truncated: bool, returned: Experiment) -> dict[str, Any]:
    """What Mixpanel answered to the PUT, when it answered with an experiment."""
    text, cut = capped_text(body)
    return {"http_status": http_status, "body": text, "truncated": cut or truncated, "summary": summary(returned)}


def requested(attempt: Any, *, mixpanel_workspace_id: int, region: str) -> dict[str, Any]:
    """conclusion_requested (decision_requested, approval_requested): the request as the
    person made it, and which action it is."""
    return {
        ATTEMPT: columns(attempt, REQUEST_COLUMNS),
        "action": attempt.action,
        "mixpanel_workspace_id": mixpanel_workspace_id,
        "region": region,
    }


def outcome(
    attempt: Any,
    *,
    claim_released: bool,
    sent: bool = False,
    before: Experiment | None = None,
    error: BaseException | None = None,
    response: dict[str, Any] | None = None,
    blocked_by: int | None = None,
) -> dict[str, Any]:
    """conclusion_succeeded / _failed / _unknown: how the press ended, with its evidence."""
    return {
        ATTEMPT: columns(attempt, OUTCOME_COLUMNS),
        "claim_released": claim_released,
        "sent": sent,
        "blocked_by_attempt": blocked_by,
        "before": snapshot(before),
        "before_summary": summary(before),
        "response": response,
        "error": error_data(error),
    }


def stale(attempt: Any, *, current: Experiment | None, changes: list[dict[str, Any]]) -> dict[str, Any]:
    """approval_stale: an approval found the experiment changed in Mixpanel since the request;
    the request closes unsent, its claim released. Carries what was read and what changed."""
    return {
        ATTEMPT: columns(attempt, dict.fromkeys(OUTCOME_COLUMNS)),
        "claim_released": True,
        "sent": False,
        "requested_modified": as_json(attempt.experiment_modified),
        "requested_plan_hash": attempt.plan_hash,
        "current_modified": as_json(current.modified) if current is not None else None,
        "changes": changes,
        "summary": summary(current),
    }


def reviewed(attempt: Any, *, closed: bool, claim_released: bool) -> dict[str, Any]:
    """approval_approved / _rejected / _expired / _withdrawn: who decided on a waiting request,
    when and why. An approval moves the attempt on to "requested" (its PUT follows); a
    rejection, an expiry or a withdrawal closes it, so it carries the outcome columns too (a
    withdrawal and an expiry with the review columns blank: nobody reviewed them)."""
    names = REVIEW_COLUMNS + OUTCOME_COLUMNS if closed else REVIEW_COLUMNS
    return {ATTEMPT: columns(attempt, dict.fromkeys(names)), "claim_released": claim_released}


def late_answer(*, reported_state: str, reason: str, **evidence: Any) -> dict[str, Any]:
    """conclusion_late_answer: an outcome that arrived after the attempt was already
    resolved (by a reconciliation). Kept as evidence; it moves nothing."""
    return {"reported_state": reported_state, "reason": reason, **evidence}


def reconciled(
    attempt: Any,
    *,
    previous_state: str,
    claim_released: bool,
    current: Experiment,
    end_date_matches_request: bool,
) -> dict[str, Any]:
    """conclusion_reconciled: what reading the experiment showed, and how the attempt was resolved."""
    return {
        ATTEMPT: columns(attempt, OUTCOME_COLUMNS),
        "outcome": "not_applied" if claim_released else "applied",
        "previous_state": previous_state,
        "claim_released": claim_released,
        "upstream_status": current.status,
        "upstream_end_date": as_json(current.end_date),
        # Evidence for an auditor that it was our PUT that landed (or not).
        "end_date_matches_request": end_date_matches_request,
        "upstream_last_modified_by": current.last_modified_by_name,
        "snapshot": snapshot(current),
        "summary": summary(current),
    }


def projection_of(payload: dict[str, Any]) -> dict[str, Any]:
    """The attempt columns an entry set ({} for an entry that moves nothing)."""
    moved = payload.get(ATTEMPT)
    return moved if isinstance(moved, dict) else {}


# --- A workspace's settings ------------------------------------------------------------------

# What settings_changed keeps under "settings", and what verify_audit compares each workspace with.
SETTINGS = "settings"


def workspace_settings(workspace: Any) -> dict[str, Any]:
    """A workspace's notification and approval settings as its settings_changed entries keep
    them: the webhook by its hint only. `workspace` is a Workspace or a row with its columns."""
    return {
        "webhook": workspace.webhook_url_hint if workspace.webhook_url_sealed else "",
        "email_bookmarkers": workspace.email_bookmarkers,
        "requires_approval": workspace.requires_approval,
        "approval_window_hours": workspace.approval_window_hours,
        "approval_off_at": as_json(workspace.approval_off_at),
        "approval_when": workspace.approval_when,
        **{name: getattr(workspace, name) for name in Workspace.REMINDER_FIELDS},
    }


def default_workspace_settings() -> dict[str, Any]:
    """The settings of a workspace no settings_changed entry has changed yet."""
    return workspace_settings(SimpleNamespace(**{f.attname: f.get_default() for f in Workspace._meta.concrete_fields}))


# --- An experiment's plan and its schedules ---------------------------------------------------

# What a plan entry keeps, and what verify_audit compares each SealedPlan row with.
PLAN_COLUMNS = ("plan", "plan_hash", "modified", "sealed_at", "as_first_seen", "changed_at")


def plan_columns(sealed: Any) -> dict[str, Any]:
    """A SealedPlan row's columns in payload form, its plan as the JSON value (not its text)."""
    values = columns(sealed, PLAN_COLUMNS)
    values["plan"] = json.loads(sealed.plan)
    return values


def plan_sealed(sealed: Any, *, start_date: dt.datetime | None) -> dict[str, Any]:
    """plan_sealed: the plan as first seen active, with Mixpanel's `modified` beside it; "as
    first seen" when that was more than a day after the experiment's start."""
    return {"sealed": plan_columns(sealed), "start_date": as_json(start_date)}


def plan_changed(sealed: Any, *, previous_hash: str, changes: list[dict[str, Any]]) -> dict[str, Any]:
    """plan_changed: a later read found another plan: the fields, before and after, and `modified`."""
    return {"sealed": plan_columns(sealed), "previous_hash": previous_hash, "changes": changes}


# What a schedule entry keeps of its row.
SCHEDULE_COLUMNS = (
    "run_at",
    "author_id",
    "author_name",
    "reason_category",
    "reason_text",
    "end_date",
    "state",
    "cancelled_at",
    "cancelled_by_name",
    "cancel_reason",
    "fired_at",
    "refusal",
    "attempt_id",
)


def schedule(scheduled: Any, **extra: Any) -> dict[str, Any]:
    """schedule_set / _cancelled / _fired / _refused: the schedule's columns as this step left them."""
    return {"schedule_id": scheduled.pk, "schedule": columns(scheduled, SCHEDULE_COLUMNS), **extra}
