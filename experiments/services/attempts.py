"""Recording an action on an experiment: claim and intent, outcome, reconciliation.

The machinery force conclude runs on, kept apart from its rules so another
action on an experiment can reuse it. Every function writes the attempt row and
its audit entry together, in one transaction, and never talks to Mixpanel.
Outcomes are compare-and-set on the attempt's state: only an attempt still open
takes one, and an answer that comes later is kept as its own entry and moves
nothing.
"""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from experiments import audit_payloads, auditlog, tasks
from experiments.mixpanel.experiment import Experiment, format_end_date
from experiments.models import AttemptAction, AttemptState, ConclusionAttempt, ConclusionClaim
from experiments.services import notifications

CLAIM_TRIES = 3
RECONCILER_NAME = "reconcile_conclusions"


def attempt_claim(
    *,
    request: dict[str, Any],
) -> tuple[ConclusionAttempt | None, ConclusionClaim | None]:
    """Insert the attempt, its claim, its "requested" entry and its reconcile task in one
    committed transaction: (attempt, None). The unique claim (per experiment and action)
    is the cross-process lock; a press that loses it gets (None, the claim that holds it)."""
    action = request.get("action", AttemptAction.CONCLUSION)
    holder = None
    for _ in range(CLAIM_TRIES):
        try:
            with transaction.atomic():
                attempt = attempt_record_intent(request=request)
                ConclusionClaim.objects.create(
                    workspace=attempt.workspace, experiment_id=attempt.experiment_id, action=action, attempt=attempt
                )
                # Queued with the intent, in its transaction (the queue is this database),
                # so no attempt is ever left open with nothing to resolve it: if this
                # process dies before the outcome, or the outcome is unknown, the worker
                # reads the experiment once the PUT cannot be in flight. An attempt that
                # got its outcome is final by then, and the task does nothing.
                # A request for approval sends nothing yet: it is looked at when it lapses.
                if attempt.state == AttemptState.AWAITING_APPROVAL:
                    tasks.expire_request_when_due(attempt=attempt)
                else:
                    tasks.reconcile_attempt_when_judgeable(attempt=attempt)
            return attempt, None
        except IntegrityError:
            claims = ConclusionClaim.objects.select_related("attempt")
            holder = claims.filter(
                workspace=request["workspace"], experiment_id=request["experiment_id"], action=action
            ).first()
            if holder is not None:
                break
            # The holder released its claim between our insert and our read: try again.
    return None, holder


def attempt_record_intent(*, request: dict[str, Any]) -> ConclusionAttempt:
    """Insert an attempt (the ConclusionAttempt fields in `request`) and its "requested"
    entry, in the caller's transaction when one is open (no savepoint: if this fails,
    the caller's writes roll back with it). Takes no claim."""
    with transaction.atomic(savepoint=False):
        attempt = ConclusionAttempt.objects.create(**request)
        workspace = attempt.workspace
        payload = audit_payloads.requested(
            attempt, mixpanel_workspace_id=workspace.mixpanel_workspace_id, region=workspace.region
        )
        attempt_append_entry(attempt, audit_payloads.entry_kind(attempt.action, attempt.state), payload)
    return attempt


def attempt_append_entry(attempt: ConclusionAttempt, kind: str, payload: dict[str, Any], **by: Any) -> None:
    """One audit entry of `attempt`: where, who and which experiment, as the attempt has them."""
    entry = auditlog.append_entry(
        kind=kind,
        workspace=attempt.workspace,
        actor=by.get("actor", attempt.actor),
        actor_name=by.get("actor_name", attempt.actor_name),
        attempt=attempt,
        experiment_id=attempt.experiment_id,
        experiment_name=attempt.experiment_name,
        payload=payload,
    )
    notifications.entry_recorded(entry=entry, attempt=attempt)


def attempt_record_outcome(
    *, attempt: ConclusionAttempt, state: str, message: str, release_claim: bool, evidence: dict[str, Any]
) -> bool:
    """Move a still-open attempt to its outcome and append the outcome entry, in one
    transaction; True when recorded. When the attempt is no longer open (a
    reconciliation judged it first), the answer is appended as a late answer and
    changes nothing else; False."""
    columns = {
        "state": state,
        "failure_reason": "" if state == AttemptState.SUCCEEDED else message,
        "http_status": evidence.pop("http_status", None),
        "duration_ms": evidence.pop("duration_ms", None),
        "finished_at": timezone.now(),
    }
    with transaction.atomic():
        # Compare-and-set: only an attempt still "requested" takes an outcome.
        moved = ConclusionAttempt.objects.filter(pk=attempt.pk, state=AttemptState.REQUESTED).update(**columns)
        if not moved:
            attempt.refresh_from_db()
            payload = audit_payloads.late_answer(
                reported_state=state, reason=message, **_late_evidence(columns, evidence)
            )
            attempt_append_entry(attempt, audit_payloads.entry_kind(attempt.action, "late"), payload)
            return False
        for field_name, value in columns.items():
            setattr(attempt, field_name, value)
        if release_claim:
            ConclusionClaim.objects.filter(attempt=attempt).delete()
        payload = audit_payloads.outcome(attempt, claim_released=release_claim, **evidence)
        attempt_append_entry(attempt, audit_payloads.entry_kind(attempt.action, state), payload)
    return True


def _late_evidence(columns: dict[str, Any], evidence: dict[str, Any]) -> dict[str, Any]:
    before = evidence.get("before")
    return {
        "reported": audit_payloads.as_json(columns),
        "sent": evidence.get("sent", False),
        "before_summary": audit_payloads.summary(before),
        "response": evidence.get("response"),
        "error": audit_payloads.error_data(evidence.get("error")),
    }


def attempt_record_reconciled(*, attempt: ConclusionAttempt, state: str, message: str, current: Experiment) -> bool:
    """Resolve the attempt if it is still in the state it was read in (compare-and-set);
    False when another reconcile, or the original request, resolved it first."""
    previous = attempt.state
    released = state == AttemptState.RECONCILED_NOT_APPLIED
    columns = {"state": state, "failure_reason": message if released else "", "finished_at": timezone.now()}
    sent_end = attempt.request_body.get("end_date") if attempt.action == AttemptAction.CONCLUSION else None
    with transaction.atomic():
        moved = ConclusionAttempt.objects.filter(pk=attempt.pk, state=previous).update(**columns)
        if not moved:
            attempt.refresh_from_db()
            return False
        for field_name, value in columns.items():
            setattr(attempt, field_name, value)
        if released:
            ConclusionClaim.objects.filter(attempt=attempt).delete()
        payload = audit_payloads.reconciled(
            attempt,
            previous_state=previous,
            claim_released=released,
            current=current,
            end_date_matches_request=bool(
                sent_end and current.end_date and format_end_date(current.end_date) == sent_end
            ),
        )
        kind = audit_payloads.entry_kind(attempt.action, "reconciled")
        attempt_append_entry(attempt, kind, payload, actor=None, actor_name=RECONCILER_NAME)
    return True
