"""Decisions owed: which experiments wait on a person, read from the lists the dashboard already holds.

The rules live here and nowhere else. For each experiment of a workspace's list, at most one
of (the first that applies, in this order):

- overdue: active more than OWED_OVERDUE_DAYS past its planned end, or, with no plan known,
  active longer than OWED_MAX_RUNNING_DAYS;
- due: active, and its planned end (shapes.planned_finish, the experiment page's rule) is reached;
- no data: active for OWED_NO_DATA_DAYS with zero exposures (unknown exposures are not zero);
- undecided: concluded and not decided for more than OWED_UNDECIDED_DAYS after its end,
  which includes one moved back to concluded after a decision ("Undo decision").

"Since" is when the state began by these rules, so a page, a reminder and the digest agree.
Beside them, the attempts that wait on people: awaiting approval, or outcome unknown.
Reading costs no call to Mixpanel: the lists come from experiment_list_cached.
"""

from __future__ import annotations

import datetime as dt
import heapq
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import islice
from typing import Any

from django.conf import settings
from django.utils import timezone

from experiments.mixpanel.experiment import ExperimentSummary
from experiments.models import ConclusionAttempt, DigestEmail, NotificationPreference, OwedReason, Workspace
from experiments.selectors.experiment_list import ExperimentListSnapshot

# Rows the home page lists at most, the longest owed first, so the rest of the page stays near
# (a phone shows each row as a card); the count says all, and each workspace's tab lists them.
ROW_LIMIT = 10
# A list's owed experiments are worked out again at most this often per process: the states
# move by days, and a warm page must not walk 10,000 experiments on every view.
RECOMPUTE_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class OwedState:
    """Why an experiment is owed a decision, and since when (by the rules above)."""

    reason: str
    since: dt.datetime


def owed_state(*, experiment: ExperimentSummary, now: dt.datetime) -> OwedState | None:
    """The one owed state of `experiment` at `now`, or None when it owes nothing."""
    if experiment.deleted is not None:
        return None
    if experiment.status == "active":
        return _active_state(experiment, now)
    if experiment.status == "concluded":
        ended = experiment.end_date or experiment.modified
        if ended is not None:
            since = ended + dt.timedelta(days=settings.OWED_UNDECIDED_DAYS)
            if now > since:
                return OwedState(OwedReason.UNDECIDED, since)
    return None


def _active_state(experiment: ExperimentSummary, now: dt.datetime) -> OwedState | None:
    start, planned_end = experiment.start_date, experiment.planned_end
    if planned_end is not None:
        overdue = planned_end + dt.timedelta(days=settings.OWED_OVERDUE_DAYS)
        if now > overdue:
            return OwedState(OwedReason.OVERDUE, overdue)
        if now >= planned_end:
            return OwedState(OwedReason.DUE, planned_end)
    elif start is not None:
        overdue = start + dt.timedelta(days=settings.OWED_MAX_RUNNING_DAYS)
        if now > overdue:
            return OwedState(OwedReason.OVERDUE, overdue)
    if start is not None and experiment.exposures_total == 0:
        silent = start + dt.timedelta(days=settings.OWED_NO_DATA_DAYS)
        if now >= silent:
            return OwedState(OwedReason.NO_DATA, silent)
    return None


@dataclass(frozen=True, slots=True)
class OwedExperiment:
    """One experiment owed a decision, as the home page, the list's tab and the messages show it."""

    workspace: Workspace
    experiment: ExperimentSummary
    reason: str
    since: dt.datetime

    @property
    def name(self) -> str:
        return self.experiment.name or "(no name)"

    @property
    def reason_label(self) -> str:
        return OwedReason(self.reason).label

    @property
    def owner(self) -> str:
        return self.experiment.creator_name or self.experiment.creator_email or ""

    @property
    def settles_by(self) -> str:
        """The one action that settles it: "conclude" an active experiment, "decide" a concluded one."""
        return "decide" if self.reason == OwedReason.UNDECIDED else "conclude"


def owed_in_snapshot(
    *, workspace: Workspace, snapshot: ExperimentListSnapshot, now: dt.datetime | None = None
) -> tuple[OwedExperiment, ...]:
    """The experiments of one workspace's list that owe a decision, longest owed first.

    Without `now`, the answer is worked out once per list copy and minute in this process.
    A workspace whose list could not be read owes nothing that we can see.
    """
    index = snapshot.index
    if index is None:
        return ()
    if now is not None:
        return _owed(workspace, index.experiments, now)
    # One list belongs to one workspace, so the memo is kept on the list itself.
    found: tuple[OwedExperiment, ...] = index.derived(
        f"owed:{workspace.pk}", lambda: _owed(workspace, index.experiments, timezone.now()), max_age=RECOMPUTE_SECONDS
    )
    return found


def _owed(
    workspace: Workspace, experiments: Iterable[ExperimentSummary], now: dt.datetime
) -> tuple[OwedExperiment, ...]:
    found = []
    for experiment in experiments:
        state = owed_state(experiment=experiment, now=now)
        if state is not None:
            found.append(OwedExperiment(workspace, experiment, state.reason, state.since))
    found.sort(key=_order)
    return tuple(found)


def _order(owed: OwedExperiment) -> tuple[dt.datetime, str, int, str]:
    return (owed.since, owed.name.casefold(), owed.workspace.pk, owed.experiment.id)


def owed_ids(*, workspace: Workspace, snapshot: ExperimentListSnapshot) -> list[str]:
    """The ids of the workspace's experiments owed a decision (the list's "Decisions owed" tab)."""
    return [o.experiment.id for o in owed_in_snapshot(workspace=workspace, snapshot=snapshot)]


def attempts_on_people(*, workspaces: list[Workspace]) -> list[ConclusionAttempt]:
    """The attempts of `workspaces` that wait on a person (awaiting approval, outcome unknown),
    oldest first: one query on attempt_ws_state_id_idx."""
    return list(
        ConclusionAttempt.objects.filter(workspace__in=workspaces, state__in=ConclusionAttempt.ON_PEOPLE_STATES)
        .select_related("workspace")
        .order_by("created_at", "id")
    )


@dataclass(frozen=True, slots=True)
class OwedOverview:
    """What the person's workspaces owe: the experiments (at most ROW_LIMIT, longest owed first),
    the attempts waiting on people, and the counts per workspace and per reason."""

    experiments: tuple[OwedExperiment, ...]
    attempts: tuple[ConclusionAttempt, ...]
    total: int
    by_workspace: dict[int, int]
    by_reason: dict[str, int]

    @property
    def limited(self) -> bool:
        return self.total > len(self.experiments)

    @property
    def empty(self) -> bool:
        return not self.total and not self.attempts


def owed_overview(
    *, snapshots: list[tuple[Workspace, ExperimentListSnapshot]], now: dt.datetime | None = None
) -> OwedOverview:
    """Everything owed across the given workspaces' lists, with the attempts waiting on people."""
    per_workspace = [
        owed_in_snapshot(workspace=workspace, snapshot=snapshot, now=now) for workspace, snapshot in snapshots
    ]
    attempts = attempts_on_people(workspaces=[workspace for workspace, _ in snapshots])
    by_workspace = Counter({owed[0].workspace.pk: len(owed) for owed in per_workspace if owed})
    by_workspace += Counter(attempt.workspace_id for attempt in attempts)
    by_reason = Counter(o.reason for owed in per_workspace for o in owed)
    # Each workspace's are in order already: merging them costs the rows shown, not every owed one.
    first = tuple(islice(heapq.merge(*per_workspace, key=_order), ROW_LIMIT))
    return OwedOverview(
        experiments=first,
        attempts=tuple(attempts),
        total=sum(len(owed) for owed in per_workspace),
        by_workspace=dict(by_workspace),
        by_reason=dict(by_reason),
    )


def digest_wanted(*, user: Any) -> bool:
    """Whether `user` gets the weekly digest by e-mail (yes, until they turn it off)."""
    found = NotificationPreference.objects.filter(user=user).values_list("weekly_digest", flat=True).first()
    return True if found is None else found


def digest_emails_for_user(*, user: Any, limit: int = 5) -> list[DigestEmail]:
    """The person's latest digest e-mails, newest first (digestemail_user_id_idx)."""
    return list(DigestEmail.objects.filter(user=user).select_related("period").order_by("-id")[:limit])
