"""The attempt state machine: claim and intent, every move from state to state, and the
audit entry each one appends.

An attempt is one press of Force conclude or Record the decision. Its states and the moves
between them are defined on ConclusionAttempt; `attempt_transition` is the one function
that moves an attempt: a compare-and-set from the states the model allows, the columns
the move sets, the claim released when the move ends the attempt's hold on its
experiment, and the move's audit entry, in one transaction. Nothing here talks to
Mixpanel or knows which task follows a move: the caller passes that as `then`, which
runs inside the same transaction (the task queue is this database), so a move and the
task that follows it commit together or not at all.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.db import DatabaseError, IntegrityError, transaction
from django.utils import timezone

from experiments import audit_payloads, auditlog, metrics
from experiments.mixpanel.experiment import Experiment, format_end_date
from experiments.models import AttemptAction, AttemptState, ConclusionAttempt, ConclusionClaim
from experiments.notifications import deliveries as notifications
from experiments.selectors import experiment_list as list_selectors

logger = logging.getLogger(__name__)

CLAIM_TRIES = 3
RECONCILER_NAME = "reconcile_conclusions"
STATE_BLOCKED = "blocked"
MSG_NOT_RECORDED = (
    "The outcome of this request on {name} could not be saved here. This attempt stays open and will be "
    "reconciled by reading the experiment from Mixpanel; do not retry."
)
MSG_LATE = "Mixpanel's answer for {name} came after the attempt was reconciled ({state}); it was kept as evidence."

# Why a press failed, for callers that answer in HTTP (the API): set on refusals and
# failures, "" on everything else.
FAILURE_FORBIDDEN = "forbidden"  # the person may not do this here
FAILURE_INVALID = "invalid"  # what they asked for is not a valid request
FAILURE_NOT_FOUND = "not_found"  # Mixpanel has no such experiment in this workspace
FAILURE_CONFLICT = "conflict"  # the experiment or the request is not in a state this applies to
FAILURE_UPSTREAM = "upstream"  # Mixpanel failed or refused
FAILURE_TIMEOUT = "timeout"  # Mixpanel did not answer in time (and nothing was sent)

Then = Callable[[ConclusionAttempt], None]


@dataclass(frozen=True)
class AttemptOutcome:
    """What one press (or approval) came to, for the view to render.

    `experiment` is the experiment as last seen: the returned one after a call that
    answered, the "before" read after a definite failure that followed the read, None
    when we never read it or cannot trust what we know.
    """

    attempt: ConclusionAttempt | None  # None when refused before any attempt was recorded
    state: str  # an AttemptState value, or STATE_BLOCKED when another attempt holds the claim
    ok: bool  # True only for a success
    message: str  # readable for a PM: what happened and what to do next
    experiment: Experiment | None = None
    blocked_by: ConclusionAttempt | None = None
    failure: str = ""  # one of the FAILURE_ words when the press was refused or failed

    @property
    def claim_holder(self) -> ConclusionAttempt | None:
        """The attempt holding the experiment's claim once this press is over."""
        if self.state == STATE_BLOCKED:
            return self.blocked_by
        if self.attempt is not None and self.state in ConclusionAttempt.CLAIM_HOLDING_STATES:
            return self.attempt
        return None

    @property
    def tone(self) -> str:
        """How the page says it: "success" (done, or asked for approval as asked), "warning"
        (on its way or held by another attempt: nothing to do but wait) or "error"."""
        if self.ok or self.state == AttemptState.AWAITING_APPROVAL:
            return "success"
        if self.state == STATE_BLOCKED or self.state in ConclusionAttempt.OPEN_STATES:
            return "warning"
        return "error"


def quoted_name(name: str, experiment_id: str) -> str:
    """How messages name an experiment: its name in quotes, or its id when it has none."""
    return f"“{name}”" if name else f"experiment {experiment_id}"


def refused(message: str, *, failure: str = FAILURE_INVALID) -> AttemptOutcome:
    """A press refused before anything was recorded (no role, bad input)."""
    return AttemptOutcome(attempt=None, state=AttemptState.FAILED, ok=False, message=message, failure=failure)


def acting_name(user: Any, via: str = "") -> str:
    """How the trail names a person acting, and through what when not through the pages
    ("Pat (pat) via API token release-bot")."""
    name = auditlog.display_name(user)
    return f"{name} via {via}" if via else name


def attempt_request(
    *, workspace: Any, user: Any, experiment_id: str, experiment_name: str, via: str = ""
) -> dict[str, Any]:
    """The fields every new attempt starts with; the action adds its own."""
    # Names are free text from Mixpanel: keep what fits rather than fail on a long one.
    max_name = ConclusionAttempt._meta.get_field("experiment_name").max_length
    return {
        "created_at": timezone.now(),
        "workspace": workspace,
        "actor": user,
        "actor_name": acting_name(user, via),
        "experiment_id": experiment_id,
        "experiment_name": (experiment_name or "")[:max_name],
    }


def experiment_id_problem(experiment_id: str) -> bool:
    """Whether `experiment_id` cannot be an attempt's experiment (blank or too long)."""
    max_length = ConclusionAttempt._meta.get_field("experiment_id").max_length
    return not experiment_id.strip() or len(experiment_id) > max_length


def attempt_claim(*, request: dict[str, Any], then: Then) -> tuple[ConclusionAttempt | None, ConclusionClaim | None]:
    """Insert the attempt, its claim and its first entry, and run `then` (the task that will
    resolve it), in one committed transaction: (attempt, None). The unique claim (per
    experiment and action) is the cross-process lock; a press that loses it gets (None,
    the claim that holds it)."""
    action = request.get("action", AttemptAction.CONCLUSION)
    holder = None
    for _ in range(CLAIM_TRIES):
        try:
            with transaction.atomic():
                attempt = attempt_record_intent(request=request)
                ConclusionClaim.objects.create(
                    workspace=attempt.workspace, experiment_id=attempt.experiment_id, action=action, attempt=attempt
                )
                then(attempt)
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
    """Insert an attempt (the ConclusionAttempt fields in `request`) and its first entry, in
    the caller's transaction when one is open (no savepoint: if this fails, the caller's
    writes roll back with it). Takes no claim."""
    with transaction.atomic(savepoint=False):
        attempt = ConclusionAttempt.objects.create(**request)
        _count_move(attempt)
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


def attempt_transition(
    attempt: ConclusionAttempt,
    *,
    to: str,
    step: str,
    columns: dict[str, Any],
    payload: Callable[[ConclusionAttempt], dict[str, Any]],
    from_states: frozenset[str] | None = None,
    where: dict[str, Any] | None = None,
    release_claim: bool = False,
    then: Then | None = None,
    **by: Any,
) -> bool:
    """Move `attempt` to state `to`, once: True when this call moved it.

    A compare-and-set on the state: the row moves only while it is in `from_states`
    (by default every state the model allows a move to `to` from) and matches `where`.
    In the same transaction, the moved columns are set on `attempt`, the claim is
    released when asked, the `step`'s entry is appended with `payload(attempt)` (by
    `by`'s actor, else the attempt's), and `then(attempt)` runs. When the row was no
    longer in those states (another process moved it first), nothing is written,
    `attempt` is read again and the answer is False.
    """
    allowed = from_states if from_states is not None else ConclusionAttempt.MOVES_FROM[to]
    moved_columns = {**columns, "state": to}
    with transaction.atomic():
        rows = ConclusionAttempt.objects.filter(pk=attempt.pk, state__in=allowed, **(where or {}))
        if not rows.update(**moved_columns):
            attempt.refresh_from_db()
            return False
        for field_name, value in moved_columns.items():
            setattr(attempt, field_name, value)
        _count_move(attempt)
        if release_claim:
            ConclusionClaim.objects.filter(attempt=attempt).delete()
        attempt_append_entry(attempt, audit_payloads.entry_kind(attempt.action, step), payload(attempt), **by)
        if then is not None:
            then(attempt)
    return True


def _count_move(attempt: ConclusionAttempt) -> None:
    # Counted once the move commits: a move that rolls back never happened.
    action, state = attempt.action, attempt.state
    transaction.on_commit(lambda: metrics.attempt_moves_total.labels(action, state).inc())


def attempt_record_outcome(
    *, attempt: ConclusionAttempt, state: str, message: str, release_claim: bool, evidence: dict[str, Any]
) -> bool:
    """Move a still-open attempt to its outcome and append the outcome entry; True when
    recorded. When the attempt is no longer "requested" (a reconciliation judged it
    first), the answer is appended as a late answer and changes nothing else; False."""
    columns = {
        "failure_reason": "" if state == AttemptState.SUCCEEDED else message,
        "http_status": evidence.pop("http_status", None),
        "duration_ms": evidence.pop("duration_ms", None),
        "finished_at": timezone.now(),
    }
    moved = attempt_transition(
        attempt,
        to=state,
        step=state,
        columns=columns,
        release_claim=release_claim,
        payload=lambda a: audit_payloads.outcome(a, claim_released=release_claim, **evidence),
    )
    if not moved:
        payload = audit_payloads.late_answer(
            reported_state=state, reason=message, **_late_evidence({**columns, "state": state}, evidence)
        )
        with transaction.atomic():
            attempt_append_entry(attempt, audit_payloads.entry_kind(attempt.action, "late"), payload)
    return moved


def _late_evidence(columns: dict[str, Any], evidence: dict[str, Any]) -> dict[str, Any]:
    before = evidence.get("before")
    return {
        "reported": audit_payloads.as_json(columns),
        "sent": evidence.get("sent", False),
        "before_summary": audit_payloads.summary(before),
        "response": evidence.get("response"),
        "error": audit_payloads.error_data(evidence.get("error")),
    }


def attempt_record_reconciled(
    *, attempt: ConclusionAttempt, applied: bool, message: str, current: Experiment, by: Any = None
) -> bool:
    """Resolve the attempt if it is still in the state it was read in (compare-and-set);
    False when another reconcile, or the original request, resolved it first. The entry is
    `by`'s, a person who asked for the check, else the reconcile command's."""
    previous = attempt.state
    state = AttemptState.RECONCILED_APPLIED if applied else AttemptState.RECONCILED_NOT_APPLIED
    sent_end = attempt.request_body.get("end_date") if attempt.action == AttemptAction.CONCLUSION else None
    # Evidence for an auditor that it was our PUT that landed: the end date it asked for.
    ours = bool(sent_end and current.end_date and format_end_date(current.end_date) == sent_end)
    moved = attempt_transition(
        attempt,
        to=state,
        step="reconciled",
        from_states=frozenset({previous}),
        columns={"failure_reason": "" if applied else message, "finished_at": timezone.now()},
        release_claim=not applied,
        payload=lambda a: audit_payloads.reconciled(
            a,
            previous_state=previous,
            claim_released=not applied,
            current=current,
            end_date_matches_request=ours,
        ),
        actor=by,
        actor_name=auditlog.display_name(by) if by is not None else RECONCILER_NAME,
    )
    if moved and applied:
        invalidate_list(attempt.workspace)
    return moved


def record_blocked(request: dict[str, Any], *, holder: ConclusionClaim | None, message: str) -> AttemptOutcome:
    """A refused press is an attempt too: it gets its own requested and failed entries
    (never a claim), so the trail shows every press, including the losing half of a
    double click. Nothing is sent upstream."""
    blocked_by = holder.attempt if holder else None
    # A refused press asked for nothing, not even an approval: it is recorded as a press.
    request = {**request, "state": AttemptState.REQUESTED, "expires_at": None, "approval_rules": []}
    with transaction.atomic():
        attempt = attempt_record_intent(request=request)
        attempt_record_outcome(
            attempt=attempt,
            state=AttemptState.FAILED,
            message=ConclusionAttempt.BLOCKED_PREFIX + message,
            release_claim=False,
            evidence={"sent": False, "blocked_by": blocked_by.pk if blocked_by else None},
        )
    return AttemptOutcome(attempt, STATE_BLOCKED, ok=False, message=message, blocked_by=blocked_by)


def finish_attempt(
    attempt: ConclusionAttempt,
    state: str,
    message: str,
    release_claim: bool,
    *,
    shown: Experiment | None = None,
    failure: str = "",
    **evidence: Any,
) -> AttemptOutcome:
    """Record the outcome and say what the press came to (`failure`: why it failed, for a
    failed one). If even recording fails, the
    committed first entry and the kept claim leave the attempt for reconciling."""
    name = quoted_name(attempt.experiment_name, attempt.experiment_id)
    try:
        recorded = attempt_record_outcome(
            attempt=attempt, state=state, message=message, release_claim=release_claim, evidence=evidence
        )
    except DatabaseError:
        logger.exception("Could not record the %s outcome of attempt #%s", state, attempt.pk)
        try:
            attempt.refresh_from_db()
        except DatabaseError:
            attempt.state = AttemptState.REQUESTED
        return AttemptOutcome(attempt, attempt.state, ok=False, message=MSG_NOT_RECORDED.format(name=name))
    if not recorded:
        return AttemptOutcome(attempt, attempt.state, ok=False, message=MSG_LATE.format(name=name, state=attempt.state))
    if state == AttemptState.FAILED and shown is None:
        shown = evidence.get("before")
    if state == AttemptState.SUCCEEDED:
        invalidate_list(attempt.workspace)
    ok = state == AttemptState.SUCCEEDED
    failure = failure if state == AttemptState.FAILED else ""
    return AttemptOutcome(attempt, state, ok=ok, message=message, experiment=shown, failure=failure)


def log_unexpected(exc: BaseException, *, attempt: ConclusionAttempt, step: str) -> None:
    """Log an exception the Mixpanel client was not expected to raise, by its frames only:
    its own text could quote a header or a URL, and secrets are never logged."""
    logger.error(
        "Unexpected %s from the Mixpanel client (%s) for attempt #%s:\n%s",
        type(exc).__name__,
        step,
        attempt.pk,
        "".join(traceback.format_tb(exc.__traceback__)),
    )


def invalidate_list(workspace: Any) -> None:
    """Drop the workspace's cached experiment list so every process shows the new status."""
    try:
        list_selectors.invalidate_experiment_list(workspace=workspace)
    except Exception:
        # A cache hiccup must not turn a recorded success into an error page.
        logger.exception("Could not invalidate the experiment list of workspace #%s", workspace.pk)
