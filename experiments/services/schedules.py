"""Scheduled conclusion: a Force conclude set for a later time, pressed by the worker then.

Setting, cancelling and firing a schedule each append a chain entry in the transaction that
moves its row. At its time a task (queued with run_after when it is set, and queued again
by the worker's sweep should that task be lost) moves it from scheduled to fired by
compare-and-set, so one worker wins whatever the clocks say, and a task that runs early
queues itself again. The winner checks its author's role again (a lost role cancels it,
with an entry saying why) and then makes the same press a person makes, under the author's
name: the claim, two-person approval and the one PUT behave exactly as for a press. A press
refused before anything was recorded leaves a schedule_refused entry saying why; a worker that
stops between firing and the press's answer leaves the schedule to the sweep, which links the
press it made or makes it.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, transaction
from django.tasks import task
from django.utils import timezone

from experiments import audit_payloads, auditlog
from experiments.dates import format_utc
from experiments.mixpanel import client as mixpanel
from experiments.mixpanel.experiment import CONCLUDED_STATUSES
from experiments.models import (
    EntryKind,
    ReasonCategory,
    ScheduledConclusion,
    ScheduleState,
    Workspace,
)
from experiments.selectors import conclusions as conclusion_selectors
from experiments.selectors import workspaces as workspace_selectors
from experiments.services.attempts import acting_name, experiment_id_problem, quoted_name
from experiments.services.conclusions import conclude_permission_problem, experiment_force_conclude

logger = logging.getLogger(__name__)

# How far ahead a Force conclude may be scheduled.
SCHEDULE_MAX_AHEAD = dt.timedelta(days=90)
REASON_MAX_LENGTH = 1000
# A live schedule this long past its time has lost its task: the worker's sweep queues it again.
SCHEDULE_LOST_AFTER = dt.timedelta(minutes=5)
# Who the trail names when the worker cancels a schedule.
WORKER_NAME = "scheduled conclusion"

MSG_BAD_REASON = "Choose a reason from the list."
MSG_REASON_REQUIRED = "Say why, for the audit trail."
MSG_REASON_TOO_LONG = f"Keep the reason under {REASON_MAX_LENGTH} characters."
MSG_NO_EXPERIMENT = "That is not a valid experiment id."
MSG_NAIVE = "Give the time with its time zone (UTC)."
MSG_PAST = "Choose a time in the future: to end the analysis now, use Force conclude."
MSG_TOO_FAR = "Choose a time at most 90 days ahead."
MSG_END_AFTER_RUN = "The end of the analysis may not be after the time the schedule runs."
MSG_CONCLUDED = "{name} is already {status} in Mixpanel: there is nothing left to force conclude."
MSG_ALREADY = "{name} is already scheduled to be force concluded at {when} by {who}. Cancel that schedule first."
MSG_SET = (
    "Scheduled: {name} will be force concluded at {when} under your name, unless someone cancels it first. "
    "Nothing has been sent to Mixpanel."
)
MSG_CANCEL_FORBIDDEN = "Only the person who set this schedule, or an admin of this workspace, can cancel it."
MSG_NOT_LIVE = "This schedule is no longer waiting: it was {state}."
MSG_CANCELLED = "Cancelled: {name} will not be force concluded at {when}."
MSG_ROLE_LOST = "{who} may no longer force conclude in this workspace, so the schedule was cancelled unsent."

RESULT_MISSING = "missing"
RESULT_NOT_DUE = "waiting until its time"


@dataclass(frozen=True, slots=True)
class ScheduleOutcome:
    """What setting or cancelling a schedule came to, for the view or the API to show."""

    schedule: ScheduledConclusion | None
    ok: bool
    message: str
    # "forbidden", "invalid" or "conflict" when refused (the API's status), else "".
    failure: str = ""


def _refused(message: str, failure: str = "invalid", schedule: ScheduledConclusion | None = None) -> ScheduleOutcome:
    return ScheduleOutcome(schedule, ok=False, message=message, failure=failure)


def schedule_problem(
    *,
    reason_category: str,
    reason_text: str,
    run_at: dt.datetime,
    end_date: dt.datetime | None,
    now: dt.datetime,
) -> str | None:
    """Why these schedule fields cannot be set, or None (the form and the API show the same)."""
    if reason_category not in ReasonCategory.values:
        return MSG_BAD_REASON
    if not reason_text.strip():
        return MSG_REASON_REQUIRED
    if len(reason_text) > REASON_MAX_LENGTH:
        return MSG_REASON_TOO_LONG
    if timezone.is_naive(run_at) or (end_date is not None and timezone.is_naive(end_date)):
        return MSG_NAIVE
    if run_at <= now:
        return MSG_PAST
    if run_at > now + SCHEDULE_MAX_AHEAD:
        return MSG_TOO_FAR
    if end_date is not None and end_date > run_at:
        return MSG_END_AFTER_RUN
    return None


def schedule_set(
    *,
    workspace: Workspace,
    user: Any,
    experiment_id: str,
    experiment_name: str,
    run_at: dt.datetime,
    reason_category: str,
    reason_text: str,
    end_date: dt.datetime | None = None,
    experiment_status: str = "",
    via: str = "",
) -> ScheduleOutcome:
    """Schedule a Force conclude of one experiment at `run_at` (at most 90 days ahead), under
    `user`'s name. Needs exactly the permission a press needs. At most one live schedule per
    experiment: a second is refused, naming the first. `experiment_status`, as last read, refuses
    an experiment already concluded (a draft may be scheduled: it may be launched by then).
    Sends nothing."""
    forbidden = conclude_permission_problem(workspace=workspace, user=user)
    if forbidden:
        return _refused(forbidden, "forbidden")
    if experiment_id_problem(experiment_id):
        return _refused(MSG_NO_EXPERIMENT)
    problem = schedule_problem(
        reason_category=reason_category, reason_text=reason_text, run_at=run_at, end_date=end_date, now=timezone.now()
    )
    if problem:
        return _refused(problem)
    if experiment_status in CONCLUDED_STATUSES:
        name = quoted_name(experiment_name, experiment_id)
        return _refused(MSG_CONCLUDED.format(name=name, status=experiment_status), "conflict")
    max_name = ScheduledConclusion._meta.get_field("experiment_name").max_length
    schedule = ScheduledConclusion(
        workspace=workspace,
        experiment_id=experiment_id,
        experiment_name=(experiment_name or "")[:max_name],
        run_at=run_at,
        author=user,
        author_name=acting_name(user, via),
        reason_category=reason_category,
        reason_text=reason_text,
        end_date=end_date,
    )
    name = quoted_name(schedule.experiment_name, experiment_id)
    try:
        with transaction.atomic():
            schedule.save(force_insert=True)
            _append(schedule, EntryKind.SCHEDULE_SET, actor=user, actor_name=schedule.author_name)
            fire_schedule.using(run_after=run_at).enqueue(schedule.pk)
    except IntegrityError:
        live = ScheduledConclusion.objects.filter(
            workspace=workspace, experiment_id=experiment_id, state=ScheduleState.SCHEDULED
        ).first()
        if live is None:
            return _refused(MSG_ALREADY.format(name=name, when="another time", who="someone"), "conflict")
        message = MSG_ALREADY.format(name=name, when=format_utc(live.run_at), who=live.author_name)
        return _refused(message, "conflict", live)
    return ScheduleOutcome(schedule, ok=True, message=MSG_SET.format(name=name, when=format_utc(run_at)))


def may_cancel(*, schedule: ScheduledConclusion, user: Any) -> bool:
    """The schedule's author, or an admin of its workspace, may cancel it."""
    if schedule.author_id == user.pk:
        return True
    access = workspace_selectors.workspace_access(user=user, workspace_pk=schedule.workspace_id)
    return access is not None and access.is_admin


def schedule_cancel(*, schedule: ScheduledConclusion, user: Any, via: str = "") -> ScheduleOutcome:
    """Cancel a live schedule (its author or a workspace admin): nothing will be sent."""
    if not may_cancel(schedule=schedule, user=user):
        return _refused(MSG_CANCEL_FORBIDDEN, "forbidden", schedule)
    name = acting_name(user, via)
    if not _cancel(schedule, by_name=name, reason=f"Cancelled by {name}.", actor=user):
        return _refused(MSG_NOT_LIVE.format(state=schedule.get_state_display().lower()), "conflict", schedule)
    message = MSG_CANCELLED.format(
        name=quoted_name(schedule.experiment_name, schedule.experiment_id), when=format_utc(schedule.run_at)
    )
    return ScheduleOutcome(schedule, ok=True, message=message)


def _cancel(schedule: ScheduledConclusion, *, by_name: str, reason: str, actor: Any) -> bool:
    """Move a live schedule to cancelled, with its entry: True when this call did."""
    moved = {"state": ScheduleState.CANCELLED, "cancelled_at": timezone.now(), "cancelled_by_name": by_name}
    moved["cancel_reason"] = reason
    return _move(schedule, moved, EntryKind.SCHEDULE_CANCELLED, actor=actor, actor_name=by_name)


def _move(schedule: ScheduledConclusion, moved: dict[str, Any], kind: str, *, actor: Any, actor_name: str) -> bool:
    """Compare-and-set a live schedule to `moved` and append its `kind` entry, in one transaction."""
    with transaction.atomic():
        rows = ScheduledConclusion.objects.filter(pk=schedule.pk, state=ScheduleState.SCHEDULED)
        if not rows.update(**moved):
            schedule.refresh_from_db()
            return False
        for field_name, value in moved.items():
            setattr(schedule, field_name, value)
        _append(schedule, kind, actor=actor, actor_name=actor_name)
    return True


def _append(schedule: ScheduledConclusion, kind: str, *, actor: Any, actor_name: str) -> None:
    auditlog.append_entry(
        kind=kind,
        workspace=schedule.workspace,
        actor=actor,
        actor_name=actor_name,
        experiment_id=schedule.experiment_id,
        experiment_name=schedule.experiment_name,
        payload=audit_payloads.schedule(schedule),
    )


# --- Firing ------------------------------------------------------------------------------


@task()
def fire_schedule(schedule_id: int) -> str:
    """Run one schedule at its time: the press its author would make, once.

    Does nothing to a schedule no longer live; one whose time has not come (this clock
    behind the one that queued it) is queued again for then. Returns what it did.
    """
    schedule = ScheduledConclusion.objects.select_related("workspace", "author").filter(pk=schedule_id).first()
    if schedule is None:
        return RESULT_MISSING
    return schedule_fire(schedule=schedule, client=None)


def schedule_fire(*, schedule: ScheduledConclusion, client: Any) -> str:
    """Fire `schedule` if it is live and due: "fired: <attempt state>", "cancelled: role lost",
    RESULT_NOT_DUE, "refused" or "already <state>". `client` None: the workspace's own."""
    if not schedule.is_live:
        return f"already {schedule.state}"
    if schedule.run_at > timezone.now():
        fire_schedule.using(run_after=schedule.run_at).enqueue(schedule.pk)
        return RESULT_NOT_DUE
    workspace, author = schedule.workspace, schedule.author
    if conclude_permission_problem(workspace=workspace, user=author):
        reason = MSG_ROLE_LOST.format(who=schedule.author_name)
        if _cancel(schedule, by_name=WORKER_NAME, reason=reason, actor=None):
            logger.info("Schedule #%s cancelled: its author may no longer force conclude.", schedule.pk)
            return "cancelled: role lost"
        return f"already {schedule.state}"
    # Only the worker that moves it to fired presses: whatever workers or clocks do, once.
    fired = {"state": ScheduleState.FIRED, "fired_at": timezone.now()}
    if not _move(schedule, fired, EntryKind.SCHEDULE_FIRED, actor=None, actor_name=WORKER_NAME):
        return f"already {schedule.state}"
    return _press(schedule, client)


def _press(schedule: ScheduledConclusion, client: Any) -> str:
    """Make the fired schedule's press, as its author, and link what it came to."""
    workspace = schedule.workspace
    outcome = experiment_force_conclude(
        workspace=workspace,
        user=schedule.author,
        experiment_id=schedule.experiment_id,
        experiment_name=schedule.experiment_name,
        reason_category=schedule.reason_category,
        reason_text=schedule.reason_text,
        end_date=schedule.end_date or timezone.now(),
        client=client if client is not None else mixpanel.client_for(workspace),
        via=_via(schedule),
    )
    if outcome.attempt is not None:
        # The press's own entries tell the rest; this link lets the pages follow it.
        ScheduledConclusion.objects.filter(pk=schedule.pk).update(attempt=outcome.attempt)
        schedule.attempt = outcome.attempt
        return f"fired: {outcome.state}"
    # Refused before any attempt was recorded: the trail still says the schedule sent nothing, and why.
    with transaction.atomic():
        ScheduledConclusion.objects.filter(pk=schedule.pk).update(refusal=outcome.message)
        schedule.refusal = outcome.message
        _append(schedule, EntryKind.SCHEDULE_REFUSED, actor=None, actor_name=WORKER_NAME)
    return "refused"


def _via(schedule: ScheduledConclusion) -> str:
    return f"schedule #{schedule.pk}"


@task()
def press_unfinished_schedule(schedule_id: int) -> str:
    """Finish a schedule whose worker stopped between firing it and the press's answer.

    Taken by compare-and-set on `fired_at`, so one worker finishes it. When the press was
    recorded (the attempt holds the schedule's name), it is only linked; otherwise it is
    made now, and the experiment's claim still keeps it to one call. Returns what it did.
    """
    schedule = ScheduledConclusion.objects.select_related("workspace", "author").filter(pk=schedule_id).first()
    if schedule is None or not schedule.is_unfinished:
        return RESULT_MISSING if schedule is None else "already finished"
    taken = ScheduledConclusion.objects.filter(
        pk=schedule.pk, state=ScheduleState.FIRED, attempt=None, refusal="", fired_at=schedule.fired_at
    ).update(fired_at=timezone.now())
    if not taken:
        return "already taken"
    made = conclusion_selectors.attempt_made_as(
        workspace=schedule.workspace, experiment_id=schedule.experiment_id, actor_suffix=f" via {_via(schedule)}"
    )
    if made is not None:
        ScheduledConclusion.objects.filter(pk=schedule.pk).update(attempt=made)
        return f"linked: {made.state}"
    return _press(schedule, client=None)


def schedules_requeue_lost() -> int:
    """Queue again the live schedules past their time by SCHEDULE_LOST_AFTER (their task was
    lost), and the fired ones whose press has not answered for as long (their worker stopped):
    each is taken by compare-and-set, so a duplicate task does nothing. Returns how many."""
    cutoff = timezone.now() - SCHEDULE_LOST_AFTER
    live = ScheduledConclusion.objects.filter(state=ScheduleState.SCHEDULED, run_at__lte=cutoff)
    unfinished = ScheduledConclusion.objects.filter(
        state=ScheduleState.FIRED, attempt=None, refusal="", fired_at__lte=cutoff
    )
    count = 0
    for pk in live.values_list("pk", flat=True):  # schedule_due_idx serves this read
        fire_schedule.enqueue(pk)
        count += 1
    for pk in unfinished.values_list("pk", flat=True):  # schedule_unfinished_idx serves this read
        press_unfinished_schedule.enqueue(pk)
        count += 1
    return count
