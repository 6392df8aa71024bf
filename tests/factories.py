"""Audit test data: conclusion attempts with their entries, written the way the service writes them.

Payload keys follow the force-conclude service: requested {"reason_category",
"reason_text", "end_date", "request_body"}; outcome {"state", "http_status",
"duration_ms", "before", "returned" | "response_body", "truncated", "error", "reason"};
reconciled {"state", "outcome", "upstream_status", "reason"}.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.conf import settings
from django.utils import timezone

from experiments import auditlog
from experiments.models import AttemptState, ConclusionAttempt, EntryKind, ReasonCategory

OUTCOME_KIND = {
    AttemptState.SUCCEEDED: EntryKind.CONCLUSION_SUCCEEDED,
    AttemptState.FAILED: EntryKind.CONCLUSION_FAILED,
    AttemptState.UNKNOWN: EntryKind.CONCLUSION_UNKNOWN,
}


def experiment_json(experiment_id: str, name: str, status: str, **extra: Any) -> dict[str, Any]:
    data = {
        "id": experiment_id,
        "name": name,
        "status": status,
        "start_date": "2026-01-05T10:00:00Z",
        "end_date": None,
        "variants": [{"key": "control"}, {"key": "treatment"}],
        "exposures_cache": {"control": 1200, "treatment": 1234},
    }
    data.update(extra)
    return data


def make_attempt(
    *,
    workspace: Any,
    actor: Any,
    experiment_id: str = "exp-1",
    experiment_name: str = "Checkout button colour",
    reason_category: str = ReasonCategory.REACHED_SIGNIFICANCE,
    reason_text: str = "Significant after two weeks",
    outcome: str | None = AttemptState.SUCCEEDED,
    created_at: dt.datetime | None = None,
    end_date: dt.datetime | None = None,
    http_status: int | None = 200,
    duration_ms: int | None = 321,
    error: Any = "",
    reconciled: str | None = None,
    returned: Any = None,
) -> ConclusionAttempt:
    """One attempt: the requested entry, then (unless `outcome` is None) its outcome entry,
    then (if `reconciled` is "applied"/"not_applied") a reconciliation entry."""
    created_at = created_at or timezone.now()
    end_date = end_date or created_at
    request_body = {"end_date": auditlog.format_timestamp(end_date)}
    attempt = ConclusionAttempt.objects.create(
        workspace=workspace,
        experiment_id=experiment_id,
        experiment_name=experiment_name,
        actor=actor,
        actor_name=auditlog.display_name(actor),
        reason_category=reason_category,
        reason_text=reason_text,
        end_date=end_date,
        request_body=request_body,
        created_at=created_at,
    )
    common = {
        "workspace": workspace,
        "actor": actor,
        "actor_name": attempt.actor_name,
        "attempt": attempt,
        "experiment_id": experiment_id,
        "experiment_name": experiment_name,
    }
    auditlog.append_entry(
        kind=EntryKind.CONCLUSION_REQUESTED,
        payload={
            "reason_category": reason_category,
            "reason_text": reason_text,
            "end_date": end_date,
            "request_body": request_body,
        },
        **common,
    )
    if outcome is None:
        return attempt
    before = experiment_json(experiment_id, experiment_name, "active")
    payload: dict[str, Any] = {
        "state": outcome,
        "http_status": http_status,
        "duration_ms": duration_ms,
        "before": before,
    }
    if outcome == AttemptState.SUCCEEDED:
        payload["returned"] = (
            returned
            if returned is not None
            else experiment_json(experiment_id, experiment_name, "concluded", end_date=request_body["end_date"])
        )
        payload["truncated"] = False
    else:
        payload["error"] = error or "Mixpanel refused the request (HTTP 403): the service account lacks access."
        payload["reason"] = payload["error"] if isinstance(payload["error"], str) else "Mixpanel refused it."
    auditlog.append_entry(kind=OUTCOME_KIND[outcome], payload=payload, **common)
    attempt.state = outcome
    attempt.http_status = http_status
    attempt.duration_ms = duration_ms
    attempt.failure_reason = payload.get("reason", "")
    attempt.finished_at = created_at + dt.timedelta(milliseconds=duration_ms or 0)
    attempt.save(update_fields=["state", "http_status", "duration_ms", "failure_reason", "finished_at"])
    if reconciled:
        state = AttemptState.RECONCILED_APPLIED if reconciled == "applied" else AttemptState.RECONCILED_NOT_APPLIED
        auditlog.append_entry(
            kind=EntryKind.CONCLUSION_RECONCILED,
            payload={
                "state": state,
                "outcome": reconciled,
                "observed_status": "concluded" if reconciled == "applied" else "active",
                "reason": f"Reconciled by reading the experiment: {reconciled.replace('_', ' ')}.",
            },
            **{**common, "actor": None, "actor_name": "reconcile_conclusions"},
        )
        attempt.state = state
        attempt.save(update_fields=["state"])
    return attempt


def assert_chain_valid() -> None:
    """The whole trail links up, and every attempt agrees with its entries (as verify_audit checks)."""
    from io import StringIO

    from django.core.management import call_command

    from experiments import auditlog
    from experiments.models import AuditEntry

    previous = auditlog.GENESIS_HASH
    for entry in AuditEntry.objects.order_by("seq"):
        assert entry.prev_hash == previous
        assert auditlog.hash_of(entry) == entry.hash
        previous = entry.hash
    out = StringIO()
    call_command("verify_audit", stdout=out)
    assert "every attempt agrees with its entries" in out.getvalue()


def session_queries() -> int:
    """Queries a request spends on its session: none when Redis holds sessions (cached_db), else one."""
    return 0 if settings.SESSION_ENGINE.endswith(".cached_db") else 1
