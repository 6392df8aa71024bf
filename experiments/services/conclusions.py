"""Writes for force conclude (issue 5): the one upstream PUT with its audit trail, and reconciling open attempts."""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
import traceback
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from django.db import DatabaseError, IntegrityError, transaction
from django.utils import timezone

from experiments import auditlog, mixpanel
from experiments.models import AttemptState, ConclusionAttempt, ConclusionClaim, EntryKind, ReasonCategory, Workspace
from experiments.selectors import experiment_list as list_selectors
from experiments.selectors import workspaces as workspace_selectors

logger = logging.getLogger(__name__)


# --- Force conclude (issue 5) ---------------------------------------------------
#
# Record intent, act, record outcome (house style 5). The order is the design:
#   a. one transaction inserts the attempt, the claim and the "requested" entry,
#      and commits; a lost claim is refused here and no PUT is ever sent;
#   b. no transaction or lock is held while we wait on Mixpanel;
#   c. a read of the experiment under this workspace checks it is ours and active;
#   d. the PUT is sent once, never retried, only after a and c;
#   e. one small transaction appends the outcome entry and moves the projection.
# A definite failure releases the claim (a person may try again as a new attempt);
# an unknown outcome keeps it until reconcile_conclusions reads the experiment.
#
# The read (c) changes nothing in Mixpanel, so it does not wait for the intent (a):
# it leaves on a worker thread as a begins and travels while a's transaction runs,
# which takes a's few milliseconds off every press (benchmark B3). The worker only
# waits on Mixpanel and never touches the database. What this costs: a press that
# loses the claim has sent one read, whose answer is dropped. The PUT still waits
# for both the committed intent and the read's answer.

# Stored upstream bodies and snapshots are capped so one odd answer cannot bloat
# the audit table; a cut value says so ("truncated": true).
SNAPSHOT_MAX_BYTES = 256 * 1024
# The form defaults the end date to "now" as the page was drawn; allow for clock
# skew between the browser, this server and Mixpanel before calling it "future".
END_DATE_FUTURE_TOLERANCE = dt.timedelta(minutes=2)
CLAIM_TRIES = 3
RECONCILER_NAME = "reconcile_conclusions"

# Readable answers, as constants so tests and views can match them.
MSG_FORBIDDEN = (
    "You may not force conclude experiments in this workspace. Ask a workspace admin for the concluder role."
)
MSG_BAD_REASON = "Choose a reason from the list."
MSG_NO_EXPERIMENT = "That is not a valid experiment id."
MSG_FUTURE_END = "The end date cannot be in the future."
MSG_BLOCKED_IN_FLIGHT = (
    "Not sent: {name} is already being concluded by {who} since {when}. "
    "Wait for that attempt to finish; its outcome will show here."
)
MSG_BLOCKED_DONE = "Not sent: {name} was already concluded by {who} at {when}."
MSG_BLOCKED_RACE = (
    "Not sent: another attempt on {name} finished a moment ago. Refresh to see its outcome before trying again."
)
MSG_READ_FAILED = "Nothing was sent: the experiment could not be read from Mixpanel first. {error}"
MSG_NOT_FOUND = (
    "Nothing was sent: Mixpanel has no experiment {experiment_id} in this workspace "
    "(it may have been deleted, or belong to another workspace)."
)
MSG_WRONG_EXPERIMENT = (
    "Nothing was sent: Mixpanel answered for a different experiment than the one asked for. Check the experiment id."
)
MSG_DELETED = "Nothing was sent: Mixpanel shows {name} as deleted."
MSG_NOT_ACTIVE = "Nothing was sent: Mixpanel shows {name} as {status}, not active, so there is nothing to conclude."
MSG_ALREADY_CONCLUDED = (
    "Nothing was sent: Mixpanel shows {name} as already {status}. It was concluded outside this dashboard "
    "or by an earlier attempt; see the audit trail."
)
MSG_BEFORE_START = (
    "Nothing was sent: the end date {end} is before the experiment started ({start}). Choose a later end date."
)
MSG_SUCCEEDED = (
    "Concluded: {name} is now {status} in Mixpanel, its analysis ending {end}. "
    "No decision was recorded and no feature flag was changed."
)
MSG_PUT_FAILED = "Mixpanel did not conclude {name}; nothing was changed. {error}"
MSG_TRY_AGAIN = " You may try again."
MSG_NOT_APPLIED = (
    "Mixpanel answered but did not conclude {name}: it is still {status}. Nothing was changed; "
    "check the experiment in Mixpanel before trying again."
)
MSG_UNKNOWN = (
    "The request to conclude {name} was sent, but no trustworthy answer came back{detail}, so we do not "
    "know yet whether Mixpanel applied it. Do not retry: this attempt stays open until it is reconciled by "
    "reading the experiment from Mixpanel."
)
MSG_UNEXPECTED = "an unexpected error ({kind})"
MSG_NOT_RECORDED = (
    "The outcome of concluding {name} could not be saved here. This attempt stays open and will be "
    "reconciled by reading the experiment from Mixpanel; do not retry."
)


@dataclass(frozen=True)
class ConclusionOutcome:
    """What one press of "Force conclude" came to, for the view to render.

    `experiment` is the experiment as last seen: the returned one after a PUT
    that answered, the "before" read after a definite failure that followed
    the read, None when we never read it or cannot trust what we know
    (blocked, failed read, unknown).
    """

    attempt: ConclusionAttempt | None  # None when refused before any attempt was recorded
    state: str  # an AttemptState value, or "blocked" when another attempt holds the claim
    ok: bool  # True only for a success
    message: str  # readable for a PM: what happened and what to do next
    experiment: mixpanel.Experiment | None = None
    blocked_by: ConclusionAttempt | None = None

    @property
    def claim_holder(self) -> ConclusionAttempt | None:
        """The attempt holding the experiment's claim once this press is over.

        Lets the view redraw the row without reading the claim it just wrote.
        """
        if self.state == STATE_BLOCKED:
            return self.blocked_by
        if self.attempt is not None and self.state in (
            AttemptState.REQUESTED,
            AttemptState.SUCCEEDED,
            AttemptState.UNKNOWN,
        ):
            return self.attempt
        return None

    @property
    def can_retry(self) -> bool:
        """A person may press again: the attempt definitely failed and freed its claim."""
        return self.state == AttemptState.FAILED


STATE_BLOCKED = "blocked"


def format_when(value: dt.datetime | None) -> str:
    """A moment as our readable messages show it: minutes, UTC, named."""
    if value is None:
        return "an unknown time"
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _quoted(name: str, experiment_id: str) -> str:
    return f"“{name}”" if name else f"experiment {experiment_id}"


def _capped_text(text: str) -> tuple[str, bool]:
    data = text.encode("utf-8")
    if len(data) <= SNAPSHOT_MAX_BYTES:
        return text, False
    # Cut on bytes, then drop a half character at the edge.
    return data[:SNAPSHOT_MAX_BYTES].decode("utf-8", errors="ignore"), True


def _snapshot(raw: Any) -> Any:
    """Upstream JSON as received when it fits, else its text cut at the cap and marked."""
    if raw is None:
        return None
    try:
        text = auditlog.canonical_json(raw)
    except (TypeError, ValueError):
        # Only parsed JSON comes from the client, but a stray object must not lose the entry.
        capped, truncated = _capped_text(repr(raw))
        return {"truncated": truncated, "text": capped}
    capped, truncated = _capped_text(text)
    if not truncated:
        return json.loads(text)
    return {"truncated": True, "text": capped}


def _experiment_summary(experiment: mixpanel.Experiment | None) -> dict[str, Any] | None:
    """The key fields an auditor reads first; the full JSON sits beside it."""
    if experiment is None:
        return None
    return {
        "id": experiment.id,
        "name": experiment.name,
        "status": experiment.status,
        "start_date": experiment.start_date,
        "end_date": experiment.end_date,
        "variants": experiment.variants_count,
        "exposures": experiment.exposures_total,
    }


def _error_data(exc: BaseException) -> dict[str, Any]:
    """An exception as audit data. MixpanelError messages are written to be safe and readable;
    anything else is named by its type only, since its text could carry anything."""
    if isinstance(exc, mixpanel.MixpanelError):
        excerpt, cut = _capped_text(exc.body_excerpt or "")
        return {
            "type": type(exc).__name__,
            "message": exc.message,
            "http_status": exc.http_status,
            "body_excerpt": excerpt,
            "body_excerpt_truncated": cut,
            "retry_after": exc.retry_after,
        }
    return {"type": type(exc).__name__, "message": MSG_UNEXPECTED.format(kind=type(exc).__name__)}


def _log_unexpected(exc: BaseException, *, attempt: ConclusionAttempt, step: str) -> None:
    # Frames only: the exception's own text could quote a header or a URL, and
    # secrets are never logged.
    logger.error(
        "Unexpected %s from the Mixpanel client (%s) for attempt #%s:\n%s",
        type(exc).__name__,
        step,
        attempt.pk,
        "".join(traceback.format_tb(exc.__traceback__)),
    )


def _entry_kind_for(state: str) -> str:
    return {
        AttemptState.SUCCEEDED: EntryKind.CONCLUSION_SUCCEEDED,
        AttemptState.FAILED: EntryKind.CONCLUSION_FAILED,
        AttemptState.UNKNOWN: EntryKind.CONCLUSION_UNKNOWN,
    }[state]


def _record_outcome(
    *,
    attempt: ConclusionAttempt,
    state: str,
    failure_reason: str = "",
    http_status: int | None = None,
    duration_ms: int | None = None,
    release_claim: bool,
    payload: dict[str, Any],
) -> None:
    """Append the outcome entry and move the projection, in one short transaction.

    Called only after the network calls are over, so nothing is held across them.
    """
    outcome = {
        "state": state,
        "failure_reason": failure_reason,
        "http_status": http_status,
        "duration_ms": duration_ms,
        "finished_at": timezone.now(),
    }
    with transaction.atomic():
        if release_claim:
            ConclusionClaim.objects.filter(attempt=attempt).delete()
        auditlog.append_entry(
            kind=_entry_kind_for(state),
            **_about(attempt),
            payload={"state": state, "claim_released": release_claim, **payload},
            update=(ConclusionAttempt.objects.filter(pk=attempt.pk), outcome),
        )
    for name, value in outcome.items():
        setattr(attempt, name, value)


def _about(attempt: ConclusionAttempt) -> dict[str, Any]:
    """What every audit entry of an attempt repeats from it: where, who, which experiment."""
    return {
        "workspace": attempt.workspace,
        "actor": attempt.actor,
        "actor_name": attempt.actor_name,
        "attempt": attempt,
        "experiment_id": attempt.experiment_id,
        "experiment_name": attempt.experiment_name,
    }


def _requested_payload(attempt: ConclusionAttempt, workspace: Workspace) -> dict[str, Any]:
    return {
        "requested_by": attempt.actor_name,
        "reason_category": attempt.reason_category,
        "reason_text": attempt.reason_text,
        "end_date": attempt.end_date,
        "request_body": attempt.request_body,
        "mixpanel_workspace_id": workspace.mixpanel_workspace_id,
        "region": workspace.region,
    }


def _field_length(name: str) -> int:
    return ConclusionAttempt._meta.get_field(name).max_length


def _new_attempt(
    *,
    workspace: Workspace,
    user: Any,
    experiment_id: str,
    experiment_name: str,
    reason_category: str,
    reason_text: str,
    end_date: dt.datetime,
    **outcome: Any,
) -> ConclusionAttempt:
    return ConclusionAttempt.objects.create(
        workspace=workspace,
        experiment_id=experiment_id,
        experiment_name=experiment_name,
        actor=user,
        actor_name=auditlog.display_name(user),
        reason_category=reason_category,
        reason_text=reason_text,
        end_date=end_date,
        request_body={"end_date": mixpanel.format_end_date(end_date)},
        **outcome,
    )


def _blocked_message(holder: ConclusionClaim | None, name: str) -> str:
    if holder is None:
        return MSG_BLOCKED_RACE.format(name=name)
    held = holder.attempt
    if held.state in (AttemptState.SUCCEEDED, AttemptState.RECONCILED_APPLIED):
        return MSG_BLOCKED_DONE.format(name=name, who=held.actor_name, when=format_when(held.finished_at))
    return MSG_BLOCKED_IN_FLIGHT.format(name=name, who=held.actor_name, when=format_when(held.created_at))


def _record_blocked(*, holder: ConclusionClaim | None, name: str, **request: Any) -> ConclusionOutcome:
    """A refused click is an attempt too: it gets its own requested and failed
    entries (never a claim), so the trail shows every press, including the
    losing half of a double click. Nothing is sent upstream."""
    message = _blocked_message(holder, name)
    with transaction.atomic():
        attempt = _new_attempt(
            **request, state=AttemptState.FAILED, failure_reason="Blocked: " + message, finished_at=timezone.now()
        )
        common = _about(attempt)
        auditlog.append_entry(
            kind=EntryKind.CONCLUSION_REQUESTED, payload=_requested_payload(attempt, attempt.workspace), **common
        )
        auditlog.append_entry(
            kind=EntryKind.CONCLUSION_FAILED,
            payload={
                "state": AttemptState.FAILED,
                "claim_released": False,
                "blocked": True,
                "blocked_by_attempt": holder.attempt_id if holder else None,
                "blocked_by_state": holder.attempt.state if holder else None,
                "sent": False,
                "reason": message,
            },
            **common,
        )
    return ConclusionOutcome(
        attempt=attempt,
        state=STATE_BLOCKED,
        ok=False,
        message=message,
        experiment=None,
        blocked_by=holder.attempt if holder else None,
    )


def experiment_force_conclude(
    *,
    workspace: Workspace,
    user: Any,
    experiment_id: str,
    experiment_name: str,
    reason_category: str,
    reason_text: str,
    end_date: dt.datetime,
    client: mixpanel.MixpanelClient,
    access: workspace_selectors.WorkspaceAccess | None = None,
) -> ConclusionOutcome:
    """Force conclude one experiment in Mixpanel, at most once, and audit every step.

    Never raises for anything Mixpanel does: every upstream failure comes back
    as an outcome with a readable message. The caller checks the user's role
    first; it is checked here again because this call changes the world, unless
    the caller hands over the `access` it has just read for this user and
    workspace in the same request (saves a query on the hot path, same check).
    """
    if access is None or access.workspace.pk != workspace.pk:
        access = workspace_selectors.workspace_access(user=user, workspace_pk=workspace.pk)
    if access is None or not access.can_conclude:
        return ConclusionOutcome(attempt=None, state=AttemptState.FAILED, ok=False, message=MSG_FORBIDDEN)
    experiment_id = (experiment_id or "").strip()
    if not experiment_id or len(experiment_id) > _field_length("experiment_id"):
        return ConclusionOutcome(attempt=None, state=AttemptState.FAILED, ok=False, message=MSG_NO_EXPERIMENT)
    # Names are free text from Mixpanel: keep what fits rather than fail on a long one.
    experiment_name = (experiment_name or "")[: _field_length("experiment_name")]
    if reason_category not in ReasonCategory.values:
        return ConclusionOutcome(attempt=None, state=AttemptState.FAILED, ok=False, message=MSG_BAD_REASON)
    if timezone.is_naive(end_date):
        end_date = timezone.make_aware(end_date)
    if end_date > timezone.now() + END_DATE_FUTURE_TOLERANCE:
        return ConclusionOutcome(attempt=None, state=AttemptState.FAILED, ok=False, message=MSG_FUTURE_END)

    name = _quoted(experiment_name, experiment_id)
    request = {
        "workspace": workspace,
        "user": user,
        "experiment_id": experiment_id,
        "experiment_name": experiment_name,
        "reason_category": reason_category,
        "reason_text": reason_text,
        "end_date": end_date,
    }

    # c. starts now, alongside a (see the top of this section).
    read = _READ_POOL.submit(client.get_experiment, workspace.mixpanel_workspace_id, experiment_id)
    # a. Claim, record intent, commit. The unique claim is the cross-process lock;
    # losing it rolls the whole transaction back (no attempt row, no entry).
    attempt = None
    holder = None
    for _ in range(CLAIM_TRIES):
        try:
            with transaction.atomic():
                attempt = _new_attempt(**request)
                ConclusionClaim.objects.create(workspace=workspace, experiment_id=experiment_id, attempt=attempt)
                auditlog.append_entry(
                    kind=EntryKind.CONCLUSION_REQUESTED,
                    **_about(attempt),
                    payload=_requested_payload(attempt, workspace),
                )
            break
        except IntegrityError:
            attempt = None
            holder = (
                ConclusionClaim.objects.select_related("attempt")
                .filter(workspace=workspace, experiment_id=experiment_id)
                .first()
            )
            if holder is not None:
                break
            # The holder released its claim between our insert and our read: try again.
    if attempt is None:
        return _record_blocked(holder=holder, name=name, **request)

    # b-e happen with the intent committed and no transaction open.
    return _conclude_committed(attempt=attempt, workspace=workspace, name=name, client=client, read=read)


# Threads for the read that runs alongside the intent (c with a). Started on demand;
# more than a server's request threads, so a read stuck until its deadline (its press
# blocked, its answer unwanted) does not hold up the next press's read.
_READ_POOL = ThreadPoolExecutor(max_workers=32, thread_name_prefix="mixpanel-read")


def _conclude_committed(
    *,
    attempt: ConclusionAttempt,
    workspace: Workspace,
    name: str,
    client: mixpanel.MixpanelClient,
    read: Future[mixpanel.Experiment],
) -> ConclusionOutcome:
    def fail(
        message: str,
        *,
        before: mixpanel.Experiment | None,
        error: BaseException | None = None,
        http_status: int | None = None,
        duration_ms: int | None = None,
        sent: bool = False,
        **extra: Any,
    ) -> ConclusionOutcome:
        payload = {
            "reason": message,
            "sent": sent,
            "before": _snapshot(before.raw) if before else None,
            "before_summary": _experiment_summary(before),
            **extra,
        }
        if error is not None:
            payload["error"] = _error_data(error)
        return _finish(
            attempt,
            state=AttemptState.FAILED,
            message=message,
            release_claim=True,
            payload=payload,
            http_status=http_status,
            duration_ms=duration_ms,
            experiment=before,
        )

    # c. The read's answer (sent as a began): proves the experiment is in this
    # workspace and still active, and keeps the "before" snapshot. A read changes
    # nothing, so any failure here, expected or not, is definite.
    try:
        before = read.result()
    except mixpanel.MixpanelNotFound as exc:
        message = MSG_NOT_FOUND.format(experiment_id=attempt.experiment_id)
        return fail(message, before=None, error=exc, http_status=exc.http_status)
    except mixpanel.MixpanelError as exc:
        message = _with_next_step(MSG_READ_FAILED.format(error=exc.message))
        return fail(message, before=None, error=exc, http_status=exc.http_status)
    except Exception as exc:
        _log_unexpected(exc, attempt=attempt, step="read")
        unexpected = MSG_UNEXPECTED.format(kind=type(exc).__name__)
        return fail(
            _with_next_step(MSG_READ_FAILED.format(error=f"It failed with {unexpected}.")), before=None, error=exc
        )
    if before.id != attempt.experiment_id:
        return fail(MSG_WRONG_EXPERIMENT, before=before)
    if before.deleted is not None:
        return fail(MSG_DELETED.format(name=name), before=before)
    if before.is_concluded:
        return fail(MSG_ALREADY_CONCLUDED.format(name=name, status=before.status), before=before)
    if not before.is_active:
        return fail(MSG_NOT_ACTIVE.format(name=name, status=before.status), before=before)
    if before.start_date is not None and attempt.end_date < before.start_date:
        return fail(
            MSG_BEFORE_START.format(end=format_when(attempt.end_date), start=format_when(before.start_date)),
            before=before,
        )

    # d. The PUT, once. Whatever it raises, we record; nothing is retried.
    started = time.monotonic()
    try:
        result = client.force_conclude(
            workspace.mixpanel_workspace_id, attempt.experiment_id, end_date=attempt.end_date
        )
    except Exception as exc:
        duration_ms = round((time.monotonic() - started) * 1000)
        if _definitely_not_applied(exc):
            return fail(
                _with_next_step(MSG_PUT_FAILED.format(name=name, error=exc.message)),
                before=before,
                error=exc,
                http_status=exc.http_status,
                duration_ms=duration_ms,
                sent=exc.http_status is not None,
            )
        if not isinstance(exc, mixpanel.MixpanelError):
            _log_unexpected(exc, attempt=attempt, step="force conclude")
        return _unknown(attempt, name=name, before=before, error=exc, duration_ms=duration_ms)
    duration_ms = round((time.monotonic() - started) * 1000)

    # e. An answer came. It counts as applied only if the experiment it returns
    # is this one and is now concluded, success or fail.
    returned = result.experiment
    body_text = result.raw_body or auditlog.canonical_json(dict(returned.raw))
    body, cut = _capped_text(body_text)
    response = {
        "http_status": result.http_status,
        "duration_ms": duration_ms,
        "status_before": before.status,
        "status_after": returned.status,
        "before": _snapshot(before.raw),
        "before_summary": _experiment_summary(before),
        "after_summary": _experiment_summary(returned),
        "response_body": body,
        "response_truncated": cut or bool(result.truncated),
        "sent": True,
    }
    if returned.id != attempt.experiment_id:
        error = mixpanel.MixpanelOutcomeUnknown("Mixpanel answered with a different experiment.")
        return _unknown(attempt, name=name, before=before, error=error, duration_ms=duration_ms, extra=response)
    if not returned.is_concluded:
        message = MSG_NOT_APPLIED.format(name=name, status=returned.status)
        return _finish(
            attempt,
            state=AttemptState.FAILED,
            message=message,
            release_claim=True,
            payload={"reason": message, "not_applied": True, **response},
            http_status=result.http_status,
            duration_ms=duration_ms,
            experiment=returned,
        )
    message = MSG_SUCCEEDED.format(
        name=name, status=returned.status, end=format_when(returned.end_date or attempt.end_date)
    )
    outcome = _finish(
        attempt,
        state=AttemptState.SUCCEEDED,
        message=message,
        release_claim=False,
        payload=response,
        http_status=result.http_status,
        duration_ms=duration_ms,
        experiment=returned,
    )
    if outcome.ok:
        _invalidate_list(workspace)
    return outcome


def _with_next_step(message: str) -> str:
    return message if "try again" in message.lower() else message + MSG_TRY_AGAIN


def _invalidate_list(workspace: Workspace) -> None:
    """Drop the workspace's cached experiment list so every process shows the new status."""
    try:
        list_selectors.invalidate_experiment_list(workspace=workspace)
    except Exception:
        # A cache hiccup must not turn a recorded success into an error page.
        logger.exception("Could not invalidate the experiment list of workspace #%s", workspace.pk)


def _definitely_not_applied(exc: BaseException) -> bool:
    """True when the PUT surely had no effect upstream: refused with a clear
    answer, or never sent. A timeout, reset, 5xx or unreadable answer after
    sending (MixpanelOutcomeUnknown), a malformed body, or anything we did not
    expect may have been applied."""
    if not isinstance(exc, mixpanel.MixpanelError) or exc.outcome_unknown:
        return False
    if isinstance(exc, mixpanel.MixpanelBadResponse):
        return False
    # A 5xx answer means the server had the request: it may have acted on it.
    return not (isinstance(exc, mixpanel.MixpanelUnavailable) and exc.http_status is not None)


def _unknown_detail(error: BaseException) -> str:
    """What went wrong, in parentheses, without the client's own "we do not know" or
    "try again" wording: the message around it already says both, and says not to retry."""
    if not isinstance(error, mixpanel.MixpanelError):
        return f" ({MSG_UNEXPECTED.format(kind=type(error).__name__)})"
    if error.message == mixpanel.MixpanelOutcomeUnknown.default_message:
        return ""
    detail = error.message.removeprefix(getattr(mixpanel, "MSG_UNKNOWN_PREFIX", ""))
    for advice in (" Try again later.", " Try again later"):
        detail = detail.replace(advice, "")
    detail = detail.strip().rstrip(".")
    return f" ({detail})" if detail else ""


def _unknown(
    attempt: ConclusionAttempt,
    *,
    name: str,
    before: mixpanel.Experiment,
    error: BaseException,
    duration_ms: int,
    extra: dict[str, Any] | None = None,
) -> ConclusionOutcome:
    message = MSG_UNKNOWN.format(name=name, detail=_unknown_detail(error))
    payload = {
        "reason": message,
        "sent": True,
        "before": _snapshot(before.raw),
        "before_summary": _experiment_summary(before),
        "duration_ms": duration_ms,
        "error": _error_data(error),
        **(extra or {}),
    }
    return _finish(
        attempt,
        state=AttemptState.UNKNOWN,
        message=message,
        release_claim=False,
        payload=payload,
        http_status=getattr(error, "http_status", None),
        duration_ms=duration_ms,
        experiment=None,
    )


def _finish(
    attempt: ConclusionAttempt,
    *,
    state: str,
    message: str,
    release_claim: bool,
    payload: dict[str, Any],
    http_status: int | None,
    duration_ms: int | None,
    experiment: mixpanel.Experiment | None,
) -> ConclusionOutcome:
    """Record the outcome; if even that fails, the committed "requested" entry
    and the kept claim leave the attempt for reconcile_conclusions."""
    try:
        _record_outcome(
            attempt=attempt,
            state=state,
            failure_reason=message if state != AttemptState.SUCCEEDED else "",
            http_status=http_status,
            duration_ms=duration_ms,
            release_claim=release_claim,
            payload=payload,
        )
    except DatabaseError:
        logger.exception("Could not record the %s outcome of conclusion attempt #%s", state, attempt.pk)
        try:
            attempt.refresh_from_db()
        except DatabaseError:
            attempt.state = AttemptState.REQUESTED
        return ConclusionOutcome(
            attempt=attempt,
            state=attempt.state,
            ok=False,
            message=MSG_NOT_RECORDED.format(name=_quoted(attempt.experiment_name, attempt.experiment_id)),
            experiment=None,
        )
    return ConclusionOutcome(
        attempt=attempt,
        state=state,
        ok=state == AttemptState.SUCCEEDED,
        message=message,
        experiment=experiment,
    )


# --- Reconciling open attempts (issue 5 item 3) -----------------------------------
# An attempt left "requested" (the process died between intent and outcome) or
# "unknown" (sent, no trustworthy answer) is resolved by READING the experiment;
# the PUT is never sent again. Each resolution is a new audit entry saying why.

RECONCILABLE_STATES = (AttemptState.REQUESTED, AttemptState.UNKNOWN)
# Statuses that say the PUT did not land: the experiment is still running (or was never started).
NOT_CONCLUDED_STATUSES = frozenset({"active", "draft"})

MSG_RECONCILED_APPLIED = "Mixpanel shows {name} as {status}: the force conclude was applied."
MSG_RECONCILED_NOT_APPLIED = (
    "Mixpanel shows {name} as still {status}: the force conclude was not applied. "
    "The claim is released, so a person may try again."
)
MSG_RECONCILE_READ_FAILED = "Could not read {name} from Mixpanel ({error}); left open, run again later."
MSG_RECONCILE_ODD = "Mixpanel shows {name} with status {status!r}; left open for a person to check."
MSG_RECONCILE_WRONG = "Mixpanel answered for a different experiment than {name}; left open for a person to check."
MSG_RECONCILE_DONE = "Already resolved ({state}); nothing to do."


@dataclass(frozen=True)
class ReconcileResult:
    """What reconciling one attempt did. `outcome` is "applied", "not_applied",
    "unresolved" (left open, see message) or "skipped" (already resolved)."""

    attempt: ConclusionAttempt
    outcome: str
    previous_state: str
    upstream_status: str | None
    message: str

    @property
    def resolved(self) -> bool:
        return self.outcome in ("applied", "not_applied", "skipped")


def conclusion_reconcile(*, attempt: ConclusionAttempt, client: mixpanel.MixpanelClient) -> ReconcileResult:
    """Resolve one "requested" or "unknown" attempt by reading its experiment.

    Concluded, success or fail upstream: "reconciled: applied", the claim stays.
    Still active or draft: "reconciled: not applied", the claim is released. A read
    failure or an unexpected status leaves the attempt open. Never sends the PUT.
    Choosing which attempts are old enough to be stuck is the caller's job
    (see experiments.selectors.conclusions.attempt_list_to_reconcile).
    """
    name = _quoted(attempt.experiment_name, attempt.experiment_id)
    previous = attempt.state
    if previous not in RECONCILABLE_STATES:
        return ReconcileResult(attempt, "skipped", previous, None, MSG_RECONCILE_DONE.format(state=previous))

    def unresolved(message: str, status: str | None = None) -> ReconcileResult:
        return ReconcileResult(attempt, "unresolved", previous, status, message)

    workspace = attempt.workspace
    try:
        current = client.get_experiment(workspace.mixpanel_workspace_id, attempt.experiment_id)
    except mixpanel.MixpanelError as exc:
        return unresolved(MSG_RECONCILE_READ_FAILED.format(name=name, error=exc.message.rstrip(".")))
    except Exception as exc:
        _log_unexpected(exc, attempt=attempt, step="reconcile read")
        return unresolved(
            MSG_RECONCILE_READ_FAILED.format(name=name, error=MSG_UNEXPECTED.format(kind=type(exc).__name__))
        )
    if current.id != attempt.experiment_id:
        return unresolved(MSG_RECONCILE_WRONG.format(name=name), current.status)
    if current.is_concluded:
        outcome, state = "applied", AttemptState.RECONCILED_APPLIED
        message = MSG_RECONCILED_APPLIED.format(name=name, status=current.status)
    elif current.status in NOT_CONCLUDED_STATUSES:
        outcome, state = "not_applied", AttemptState.RECONCILED_NOT_APPLIED
        message = MSG_RECONCILED_NOT_APPLIED.format(name=name, status=current.status)
    else:
        return unresolved(MSG_RECONCILE_ODD.format(name=name, status=current.status), current.status)

    sent_end = attempt.request_body.get("end_date") if isinstance(attempt.request_body, dict) else None
    with transaction.atomic():
        # Lock and re-check: another reconcile run, or the original request
        # finishing late, may have resolved it since we read the state.
        locked = ConclusionAttempt.objects.select_for_update().select_related("workspace").get(pk=attempt.pk)
        if locked.state not in RECONCILABLE_STATES:
            return ReconcileResult(
                locked, "skipped", previous, current.status, MSG_RECONCILE_DONE.format(state=locked.state)
            )
        locked.state = state
        locked.failure_reason = message if outcome == "not_applied" else ""
        locked.finished_at = timezone.now()
        locked.save(update_fields=["state", "failure_reason", "finished_at"])
        if outcome == "not_applied":
            ConclusionClaim.objects.filter(attempt=locked).delete()
        auditlog.append_entry(
            kind=EntryKind.CONCLUSION_RECONCILED,
            workspace=locked.workspace,
            actor=None,
            actor_name=RECONCILER_NAME,
            attempt=locked,
            experiment_id=locked.experiment_id,
            experiment_name=locked.experiment_name,
            payload={
                "state": state,
                "outcome": outcome,
                "previous_state": previous,
                "claim_released": outcome == "not_applied",
                "reason": message,
                "upstream_status": current.status,
                # Evidence for an auditor that it was our PUT that landed (or not).
                "upstream_end_date": current.end_date,
                "end_date_matches_request": bool(
                    sent_end and current.end_date and mixpanel.format_end_date(current.end_date) == sent_end
                ),
                "upstream_last_modified_by": current.last_modified_by_name,
                "snapshot": _snapshot(current.raw),
                "summary": _experiment_summary(current),
            },
        )
    if outcome == "applied":
        _invalidate_list(workspace)
    return ReconcileResult(locked, outcome, previous, current.status, message)
