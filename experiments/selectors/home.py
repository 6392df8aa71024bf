"""Reads for the home page: every active experiment of the person's workspaces, on one page.

Each workspace's experiments come from its cached list (experiment_list.experiment_list_cached),
so the page costs no more Mixpanel calls than opening each workspace's experiments page would,
and none while those lists are fresh. The open conclusion attempts of all the workspaces are
one query, whatever the number of workspaces or experiments.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from dataclasses import dataclass

from django.conf import settings
from django.utils import timezone

from experiments.mixpanel import shapes
from experiments.mixpanel.experiment import ExperimentSummary
from experiments.models import AttemptAction, AttemptState, ConclusionAttempt, ConclusionClaim, Workspace
from experiments.selectors import experiment_list as list_selectors
from experiments.selectors import experiment_rows as row_selectors
from experiments.selectors import owed as owed_selectors
from experiments.selectors.experiment_list import ExperimentListSnapshot
from experiments.selectors.workspaces import WorkspaceAccess

# An attempt in one of these states holds the experiment's conclusion claim and has no final
# outcome yet: its PUT is on its way, its answer was lost, or it waits for a second person.
# Rows shown at most; past it, the page asks for a workspace or a search to narrow it.
ROW_LIMIT = 200
# The active experiments' order: the longest running first, as the ones most likely to need a decision.
SORT = "-days"


@dataclass(frozen=True, slots=True)
class ActiveExperiment:
    """One row of the home page: an active experiment, its workspace and its open attempt, if any."""

    workspace: Workspace
    experiment: ExperimentSummary
    name: str
    linkable: bool
    days_running: int | None
    owner: str
    attempt: ConclusionAttempt | None

    @property
    def sample_ratio_mismatch(self) -> bool | None:
        """True: exposures do not follow the planned split; False: they do; None: not checkable."""
        return self.experiment.sample_ratio_mismatch


@dataclass(frozen=True, slots=True)
class WorkspaceOverview:
    """One workspace card: its list as this request read it, and its open conclusion attempts by state.

    The attempt counts come from our own records, so they show even when Mixpanel cannot be
    read, and they count every open attempt of the workspace (an experiment whose outcome is
    unknown may already show as concluded in Mixpanel).
    """

    access: WorkspaceAccess
    snapshot: ExperimentListSnapshot
    being_concluded: int = 0
    unknown: int = 0
    awaiting_approval: int = 0
    # Decisions owed: experiments (selectors.owed) and attempts waiting on a person.
    owed: int = 0

    @property
    def workspace(self) -> Workspace:
        return self.access.workspace

    @property
    def active(self) -> int | None:
        """Active experiments in the list; None when no copy of the list could be read."""
        index = self.snapshot.index
        return index.counts.get("active", 0) if index is not None else None


@dataclass(frozen=True, slots=True)
class HomeOverview:
    """The home page: every workspace's card, and the active experiments the filters select."""

    workspaces: tuple[WorkspaceOverview, ...]
    experiments: tuple[ActiveExperiment, ...]
    # Matching experiments before ROW_LIMIT.
    total: int
    # Of the workspaces the filter chose: how many lists were searched, and those that could not be read.
    searched: int
    unread: tuple[WorkspaceOverview, ...]
    # What the workspaces owe, first on the page.
    owed: owed_selectors.OwedOverview | None = None

    @property
    def limited(self) -> bool:
        return self.total > len(self.experiments)


def open_conclusion_attempts(*, workspaces: list[Workspace]) -> dict[tuple[int, str], ConclusionAttempt]:
    """The attempts holding an open conclusion claim in any of `workspaces`, keyed (workspace pk, experiment id).

    One query. Claims are few (one per concluded or claimed experiment), and the open
    ones fewer still; claim_unique_ws_experiment_action leads with the workspace.
    """
    claims = (
        ConclusionClaim.objects.filter(
            workspace__in=workspaces,
            action=AttemptAction.CONCLUSION,
            attempt__state__in=ConclusionAttempt.WAITING_STATES,
        )
        .select_related("attempt")
        .order_by()
    )
    return {(claim.workspace_id, claim.experiment_id): claim.attempt for claim in claims}


def _read_lists(workspaces: list[WorkspaceAccess]) -> list[ExperimentListSnapshot]:
    """Each workspace's cached list. Once reading them has taken one Mixpanel deadline, the rest
    are not asked for (their last copy, or a note, stands in), so a slow Mixpanel cannot hold
    the page for one deadline per workspace."""
    started = time.monotonic()
    budget = settings.MIXPANEL_DEADLINE
    snapshots = []
    for access in workspaces:
        ask = time.monotonic() - started < budget
        snapshots.append(list_selectors.experiment_list_cached(workspace=access.workspace, ask_mixpanel=ask))
    return snapshots


def home_overview(
    *, workspaces: list[WorkspaceAccess], workspace_pk: int | None = None, q: str = "", now: dt.datetime | None = None
) -> HomeOverview:
    """The cards of `workspaces` and their active experiments, optionally of one workspace and matching `q`.

    `q` is searched as the experiments page searches it (name, id, tags, creator,
    hypothesis). Never raises for Mixpanel's failures: a workspace whose list cannot be
    read carries its snapshot's error, and the others still show.
    """
    now = now or timezone.now()
    snapshots = _read_lists(workspaces)
    attempts = open_conclusion_attempts(workspaces=[access.workspace for access in workspaces])
    owed = owed_selectors.owed_overview(
        snapshots=[(access.workspace, snapshot) for access, snapshot in zip(workspaces, snapshots, strict=True)]
    )
    cards = tuple(
        _card(access, snapshot, attempts, owed=owed.by_workspace.get(access.workspace.pk, 0))
        for access, snapshot in zip(workspaces, snapshots, strict=True)
    )
    chosen = [card for card in cards if workspace_pk is None or card.workspace.pk == workspace_pk]
    rows: list[ActiveExperiment] = []
    for card in chosen:
        index = card.snapshot.index
        if index is None:
            continue
        matched, _ = index.select(status="active", q=q, sort=SORT)
        workspace = card.workspace
        for i in matched:
            experiment = index.experiments[i]
            rows.append(
                ActiveExperiment(
                    workspace=workspace,
                    experiment=experiment,
                    name=experiment.name or "(no name)",
                    linkable=row_selectors.experiment_linkable(experiment.id),
                    days_running=shapes.days_running(experiment, now),
                    owner=experiment.creator_name or experiment.creator_email or "",
                    attempt=attempts.get((workspace.pk, experiment.id)),
                )
            )
    rows.sort(key=_row_order)
    return HomeOverview(
        workspaces=cards,
        experiments=tuple(rows[:ROW_LIMIT]),
        total=len(rows),
        searched=sum(1 for card in chosen if card.snapshot.available),
        unread=tuple(card for card in chosen if not card.snapshot.available),
        owed=owed,
    )


def _card(
    access: WorkspaceAccess,
    snapshot: ExperimentListSnapshot,
    attempts: dict[tuple[int, str], ConclusionAttempt],
    *,
    owed: int = 0,
) -> WorkspaceOverview:
    by_state = Counter(attempt.state for (ws_pk, _), attempt in attempts.items() if ws_pk == access.workspace.pk)
    return WorkspaceOverview(
        access=access,
        snapshot=snapshot,
        being_concluded=by_state[AttemptState.REQUESTED],
        unknown=by_state[AttemptState.UNKNOWN],
        awaiting_approval=by_state[AttemptState.AWAITING_APPROVAL],
        owed=owed,
    )


def workspace_card(*, access: WorkspaceAccess) -> WorkspaceOverview:
    """One workspace's card, read again (its list, as cached, and one query for its open
    attempts): what the home page redraws after a review changed its counts."""
    snapshot = list_selectors.experiment_list_cached(workspace=access.workspace)
    owed = owed_selectors.owed_overview(snapshots=[(access.workspace, snapshot)])
    return _card(
        access,
        snapshot,
        open_conclusion_attempts(workspaces=[access.workspace]),
        owed=owed.by_workspace.get(access.workspace.pk, 0),
    )


def _row_order(row: ActiveExperiment) -> tuple[int, str, str, int, str]:
    days = row.days_running if row.days_running is not None else -1
    return (-days, row.name.casefold(), row.workspace.name.casefold(), row.workspace.pk, row.experiment.id)
