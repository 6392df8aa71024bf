"""Reads for the experiments list's rows: each experiment as a table row or page section shows it."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.utils import timezone
from django.utils.text import capfirst

from experiments.mixpanel import shapes
from experiments.mixpanel.experiment import DECIDED_STATUSES, STATUSES, Experiment, ExperimentSummary
from experiments.models import AttemptAction, ConclusionAttempt, Workspace
from experiments.selectors import conclusions as conclusion_selectors
from experiments.selectors import experiment_list as list_selectors
from experiments.selectors import owed as owed_selectors
from experiments.selectors import schedules as schedule_selectors
from experiments.selectors.experiment_list import ExperimentListSnapshot, ExperimentPage
from experiments.selectors.workspaces import WorkspaceAccess

# Relative times in one unit, for table cells: (below this many seconds, unit seconds, unit name).
_RELATIVE_UNITS = (
    (3600, 60, "minute"),
    (86400, 3600, "hour"),
    (86400 * 30, 86400, "day"),
    (86400 * 365, 86400 * 30, "month"),
)


def relative_time(value: dt.datetime | None, now: dt.datetime) -> str:
    """ "3 days ago" / "in 2 hours" / "" — one unit, months of 30 days, for table cells.

    Hand-written rather than django.utils.timesince: it runs for every cell of every
    row and is ten times cheaper.
    """
    if value is None:
        return ""
    seconds = (now - value).total_seconds()
    past = seconds >= 0
    seconds = abs(seconds)
    if seconds < 60:
        return "less than a minute ago" if past else "in less than a minute"
    size, name = next(((size, name) for limit, size, name in _RELATIVE_UNITS if seconds < limit), (86400 * 365, "year"))
    count = int(seconds // size)
    text = f"{count} {name}{'' if count == 1 else 's'}"
    return f"{text} ago" if past else f"in {text}"


@dataclass(frozen=True, slots=True)
class ExperimentRow:
    """An experiment as a table row or page section shows it, with its claim and notice.

    `claim` is the attempt holding the one-at-a-time claim, if any; `notice` is the
    answer to a force conclude just made (readable text), `notice_tone` its tone:
    "success", "warning" (nothing to do: it waits, or was closed unsent) or "error".
    The display values are prepared once here, as plain text, so the row template
    stays a handful of variables: a Django template variable costs microseconds, and a
    page has 50 rows. `linkable` is False for an id our routes cannot carry.
    """

    experiment: Experiment | ExperimentSummary
    claim: ConclusionAttempt | None
    show_conclude: bool
    dom_id: str
    start_relative: str
    end_relative: str
    linkable: bool = False
    notice: str = ""
    notice_tone: str = ""
    name: str = ""
    start_iso: str = ""
    start_text: str = ""
    end_iso: str = ""
    end_text: str = ""
    tags: tuple[str, ...] = ()
    creator: str = ""
    exposures: str = ""
    exp_id: str = ""
    status: str = ""
    variants: int = 0
    days_running: str = "—"
    # The decision on a concluded experiment, in words ("" when there is none to make).
    decision_text: str = ""
    decision: ConclusionAttempt | None = None
    # The next step after a conclusion, offered to those who may take it.
    show_decide: bool = False
    # When a Force conclude is scheduled for ("" when none waits), as the list shows it.
    scheduled_text: str = ""
    scheduled_iso: str = ""

    def __getitem__(self, key: str) -> Any:
        # Django's template lookup tries row[key] before getattr(row, key); answering it
        # spares a raised and caught TypeError per {{ row.x }}: about 30% of a row's render.
        try:
            return getattr(self, key)
        except AttributeError:
            raise KeyError(key) from None

    @property
    def concluded_by_us(self) -> bool:
        return self.claim is not None and self.claim.is_applied

    @property
    def in_flight(self) -> bool:
        return self.claim is not None and not self.claim.is_applied

    @property
    def notice_in_row(self) -> bool:
        """Whether a list row shows its notice in place: only while nothing else on the row
        says what happened. A success shows "Concluded by ..." and a waiting row its chip (their
        notice goes to the page's one notice), so a row keeps its height."""
        return bool(self.notice) and self.claim is None and self.notice_tone != "success"

    @property
    def has_actions(self) -> bool:
        return (
            bool(self.notice)
            or self.claim is not None
            or self.show_conclude
            or self.show_decide
            or bool(self.scheduled_text)
        )

    @property
    def status_class(self) -> str:
        status = self.experiment.status
        return status if status in STATUSES else "unknown"


def _iso(value: dt.datetime | None) -> str:
    return value.astimezone(dt.UTC).isoformat() if value is not None else ""


def _utc_text(value: dt.datetime | None) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC") if value is not None else ""


def experiment_linkable(experiment_id: str) -> bool:
    """Whether our routes can carry this id: they take it as one path segment, so not empty and without "/"."""
    return bool(experiment_id) and "/" not in experiment_id


def experiment_dom_id(experiment_id: str) -> str:
    """A safe, stable HTML id for an experiment (upstream ids are untrusted text)."""
    return "exp-" + hashlib.sha256(experiment_id.encode("utf-8")).hexdigest()[:16]


def experiment_row(
    *,
    access: WorkspaceAccess,
    experiment: Experiment | ExperimentSummary,
    claim: ConclusionAttempt | None,
    now: dt.datetime | None = None,
    notice: str = "",
    notice_tone: str = "",
    decision: ConclusionAttempt | None = None,
    scheduled_at: dt.datetime | None = None,
) -> ExperimentRow:
    """One row. The button shows for concluders and admins on active experiments nobody has claimed.

    `decision` is the attempt holding the experiment's decision claim, if any.
    """
    now = now or timezone.now()
    running = shapes.days_running(experiment, now)
    linkable = experiment_linkable(experiment.id)
    exposures = experiment.exposures_total
    return ExperimentRow(
        experiment=experiment,
        claim=claim,
        show_conclude=linkable and access.can_conclude and experiment.is_active and claim is None,
        linkable=linkable,
        dom_id=experiment_dom_id(experiment.id),
        start_relative=relative_time(experiment.start_date, now),
        end_relative=relative_time(experiment.end_date, now),
        notice=notice,
        notice_tone=notice_tone,
        name=experiment.name or "(no name)",
        start_iso=_iso(experiment.start_date),
        start_text=_utc_text(experiment.start_date),
        end_iso=_iso(experiment.end_date),
        end_text=_utc_text(experiment.end_date),
        tags=experiment.tags,
        exp_id=experiment.id,
        status=experiment.status,
        variants=experiment.variants_count,
        creator=experiment.creator_name or "—",
        exposures=str(exposures) if exposures is not None else "—",
        days_running=str(running) if running is not None else "—",
        decision=decision,
        decision_text=decision_text(experiment.status, decision),
        show_decide=linkable and access.can_conclude and experiment.status == "concluded" and decision is None,
        scheduled_text=_utc_text(scheduled_at),
        scheduled_iso=_iso(scheduled_at),
    )


def decision_text(status: str, decision: ConclusionAttempt | None) -> str:
    """A concluded experiment's decision in a product manager's words; "" before it concludes."""
    if decision is not None and decision.is_applied:
        return capfirst(decision.decision_words)
    if decision is not None:
        return "Being recorded"
    if status in DECIDED_STATUSES:
        return f"{status.capitalize()} (decided in Mixpanel)"
    if status == "concluded":
        return "Not decided yet"
    return ""


# The list's own tabs, beside Mixpanel's statuses: experiments picked by what our records say
# about them (their waiting conclusion), so a person finds what waits for them in one click.
WAITING_TABS: dict[str, Callable[[ConclusionAttempt], bool]] = {
    "awaiting": lambda attempt: attempt.is_awaiting_approval,
    "concluding": lambda attempt: attempt.is_open,
}


# The tab of the experiments owed a decision, picked by selectors.owed's rules.
OWED_TAB = "owed"


@dataclass(frozen=True, slots=True)
class ListPage:
    """One page of the experiments list: its rows, and the counts of every tab (Mixpanel's
    statuses and the Waiting tabs). `waiting_tabs` says whether the Waiting tabs are shown:
    in a workspace that requires approval, or while anything waits, or when one is chosen."""

    page: ExperimentPage
    rows: list[ExperimentRow]
    waiting_counts: dict[str, int]
    waiting_tabs: bool


def waiting_tab_counts(
    *, snapshot: ExperimentListSnapshot, waiting: dict[str, ConclusionAttempt], q: str, workspace: Workspace
) -> dict[str, int]:
    """Each Waiting tab's count: its waiting experiments that the list holds and that match `q`,
    and the experiments owed a decision (selectors.owed) that match `q`."""
    counts = {
        tab: list_selectors.experiment_list_among_count(
            snapshot=snapshot, experiment_ids=[eid for eid, attempt in waiting.items() if picks(attempt)], q=q
        )
        for tab, picks in WAITING_TABS.items()
    }
    owed = owed_selectors.owed_ids(workspace=workspace, snapshot=snapshot)
    counts[OWED_TAB] = (
        list_selectors.experiment_list_among_count(snapshot=snapshot, experiment_ids=owed, q=q) if q else len(owed)
    )
    return counts


def experiment_list_rows(
    *, access: WorkspaceAccess, snapshot: ExperimentListSnapshot, status: str, q: str, sort: str, page: int, size: int
) -> ListPage:
    """One page of the list with its rows and every tab's count.

    One query for a page of a status tab (the page's claims, with every waiting conclusion
    of the workspace for the Waiting tabs' counts); a Waiting tab reads the waiting
    conclusions first, to know which experiments it shows.
    """
    picks = WAITING_TABS.get(status)
    chosen = None
    if picks is not None:
        waiting = conclusion_selectors.waiting_conclusions(workspace=access.workspace)
        chosen = [eid for eid, attempt in waiting.items() if picks(attempt)]
    elif status == OWED_TAB:
        chosen = owed_selectors.owed_ids(workspace=access.workspace, snapshot=snapshot)
    shown = list_selectors.experiment_list_page(
        snapshot=snapshot, status=status, q=q, sort=sort, page=page, page_size=size, only=chosen
    )
    claims, waiting = conclusion_selectors.claims_for_list_page(
        workspace=access.workspace, experiment_ids=[e.id for e in shown.experiments]
    )
    counts = waiting_tab_counts(snapshot=snapshot, waiting=waiting, q=q, workspace=access.workspace)
    show_tabs = access.workspace.requires_approval or any(counts.values()) or chosen is not None
    scheduled = schedule_selectors.live_schedules(
        workspace=access.workspace, experiment_ids=[e.id for e in shown.experiments]
    )
    rows = experiment_rows(access=access, experiments=shown.experiments, claims=claims, scheduled=scheduled)
    return ListPage(shown, rows, counts, show_tabs)


def experiment_rows(
    *,
    access: WorkspaceAccess,
    experiments: tuple[ExperimentSummary, ...],
    claims: dict[tuple[str, str], ConclusionAttempt],
    scheduled: dict[str, Any] | None = None,
) -> list[ExperimentRow]:
    """Rows for one page of experiments, with their claims (conclusion and decision), keyed
    (experiment id, action), and their live schedules by experiment id."""
    scheduled = scheduled or {}
    conclusion, decision = AttemptAction.CONCLUSION, AttemptAction.DECISION
    now = timezone.now()
    return [
        experiment_row(
            access=access,
            experiment=e,
            claim=claims.get((e.id, conclusion)),
            now=now,
            decision=claims.get((e.id, decision)),
            scheduled_at=scheduled[e.id].run_at if e.id in scheduled else None,
        )
        for e in experiments
    ]
