"""Audit test data: conclusion attempts with their entries, written by the force-conclude
service's own writers (experiments.services.conclusions), so they have its payload shapes."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import Iterator
from typing import Any
from unittest import mock

from django.conf import settings
from django.utils import timezone

from experiments import audit_payloads, auditlog
from experiments.mixpanel.experiment import format_end_date, parse_experiment
from experiments.models import AttemptState, ConclusionAttempt, ReasonCategory
from experiments.services import attempts as attempt_services
from experiments.services import reconcile as reconcile_services


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
    error: str = "",
    reconciled: str | None = None,
    returned: Any = None,
) -> ConclusionAttempt:
    """One attempt: the requested entry, then (unless `outcome` is None) its outcome entry,
    then (if `reconciled` is "applied"/"not_applied") a reconciliation entry."""
    created_at = created_at or timezone.now()
    end_date = end_date or created_at
    attempt = attempt_services.attempt_record_intent(
        request={
            "created_at": created_at,
            "workspace": workspace,
            "actor": actor,
            "actor_name": auditlog.display_name(actor),
            "experiment_id": experiment_id,
            "experiment_name": experiment_name,
            "reason_category": reason_category,
            "reason_text": reason_text,
            "end_date": end_date,
            "request_body": {"end_date": format_end_date(end_date)},
        }
    )
    if outcome is None:
        return attempt
    before = parse_experiment(experiment_json(experiment_id, experiment_name, "active"))
    evidence: dict[str, Any] = {"before": before, "sent": True, "http_status": http_status, "duration_ms": duration_ms}
    if outcome == AttemptState.SUCCEEDED:
        after = returned or experiment_json(
            experiment_id, experiment_name, "concluded", end_date=format_end_date(end_date)
        )
        evidence["response"] = audit_payloads.answer(
            http_status=http_status or 200,
            body=auditlog.canonical_json({"status": "ok", "results": after}),
            truncated=False,
            returned=parse_experiment(after),
        )
        message = ""
    else:
        message = error or "Mixpanel refused the request (HTTP 403): the service account lacks access."
    attempt_services.attempt_record_outcome(
        attempt=attempt,
        state=outcome,
        message=message,
        release_claim=outcome == AttemptState.FAILED,
        evidence=evidence,
    )
    if reconciled:
        applied = reconciled == "applied"
        current = parse_experiment(
            experiment_json(experiment_id, experiment_name, "concluded" if applied else "active")
        )
        message = f"Reconciled by reading the experiment: {reconciled.replace('_', ' ')}."
        attempt_services.attempt_record_reconciled(attempt=attempt, applied=applied, message=message, current=current)
    return attempt


@contextlib.contextmanager
def _clock_shifted(shift: dt.timedelta) -> Iterator[None]:
    real_now = timezone.now

    def shifted() -> dt.datetime:
        return real_now() + shift

    with mock.patch.object(timezone, "now", shifted):
        yield


def past_the_in_flight_limit() -> contextlib.AbstractContextManager[None]:
    """Run the block with Django's clock moved past the in-flight limit, as a reconcile
    run would see every attempt made so far once their PUTs can no longer be on their way."""
    return _clock_shifted(reconcile_services.in_flight_limit() + dt.timedelta(seconds=1))


def made_long_ago() -> contextlib.AbstractContextManager[None]:
    """Attempts made in the block are already past their in-flight limit when it ends."""
    return _clock_shifted(-reconcile_services.in_flight_limit() - dt.timedelta(seconds=1))


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


def said(response) -> str:
    """Everything an htmx answer tells the person: the fragment, and the page's one notice
    (HX-Trigger showToast), where a list row's messages go so the row stays one line."""
    trigger = json.loads(response.headers.get("HX-Trigger") or "{}")
    return response.content.decode() + "\n" + trigger.get("showToast", {}).get("message", "")


def workspace_settings_set(workspace: Any, *, webhook_url: str = "", **changes: Any) -> Any:
    """Change a workspace's settings as the Settings page does (through the service, so the
    change is chained and verify_audit agrees), keeping whatever `changes` does not name."""
    from experiments.services import workspaces as workspace_services

    current = {
        "email_bookmarkers": workspace.email_bookmarkers,
        "requires_approval": workspace.requires_approval,
        "approval_window_hours": workspace.approval_window_hours,
        "remove_webhook": False,
    }
    workspace_services.workspace_settings_update(
        workspace=workspace, user=None, actor_name="test set-up", webhook_url=webhook_url, **{**current, **changes}
    )
    return workspace
