"""Reads for force conclude: claims, attempts, attempts to reconcile, and drift from Mixpanel."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from django.db.models import Q
from django.utils import timezone

from experiments.mixpanel.experiment import Experiment
from experiments.models import AttemptAction, AttemptState, ConclusionAttempt, ConclusionClaim, Workspace


def claim_for_experiments(
    *, workspace: Workspace, experiment_ids: list[str], action: str = AttemptAction.CONCLUSION
) -> dict[str, ConclusionAttempt]:
    """The attempt holding each experiment's claim for `action` (in flight, unknown or succeeded), in one query."""
    claims = ConclusionClaim.objects.filter(
        workspace=workspace, experiment_id__in=experiment_ids, action=action
    ).select_related("attempt")
    return {claim.experiment_id: claim.attempt for claim in claims}


def waiting_conclusions(*, workspace: Workspace) -> dict[str, ConclusionAttempt]:
    """The attempts holding a waiting conclusion claim in `workspace` (on their way, answer lost,
    or awaiting approval), by experiment id. One query: claims are few (one per concluded
    experiment or open attempt), and the waiting ones fewer still."""
    claims = ConclusionClaim.objects.filter(
        workspace=workspace, action=AttemptAction.CONCLUSION, attempt__state__in=ConclusionAttempt.WAITING_STATES
    ).select_related("attempt")
    return {claim.experiment_id: claim.attempt for claim in claims}


def claims_for_list_page(
    *, workspace: Workspace, experiment_ids: list[str]
) -> tuple[dict[tuple[str, str], ConclusionAttempt], dict[str, ConclusionAttempt]]:
    """The claims of one page of the list, keyed (experiment id, action), and every waiting
    conclusion of the workspace by experiment id (for the list's Waiting tabs): one query."""
    waiting = Q(action=AttemptAction.CONCLUSION, attempt__state__in=ConclusionAttempt.WAITING_STATES)
    claims = ConclusionClaim.objects.filter(Q(experiment_id__in=experiment_ids) | waiting, workspace=workspace)
    page: dict[tuple[str, str], ConclusionAttempt] = {}
    waiting_ones: dict[str, ConclusionAttempt] = {}
    wanted = set(experiment_ids)
    for claim in claims.select_related("attempt"):
        if claim.experiment_id in wanted:
            page[(claim.experiment_id, claim.action)] = claim.attempt
        if claim.action == AttemptAction.CONCLUSION and claim.attempt.is_waiting:
            waiting_ones[claim.experiment_id] = claim.attempt
    return page, waiting_ones


def claims_by_action(*, workspace: Workspace, experiment_id: str) -> dict[str, ConclusionAttempt]:
    """The attempts holding one experiment's claims, by action (conclusion, decision), in one query."""
    claims = ConclusionClaim.objects.filter(workspace=workspace, experiment_id=experiment_id).select_related("attempt")
    return {claim.action: claim.attempt for claim in claims}


def attempt_in_workspace(*, workspace: Workspace, attempt_pk: int) -> ConclusionAttempt | None:
    """One conclusion attempt of `workspace`, or None (also for another workspace's)."""
    return ConclusionAttempt.objects.filter(workspace=workspace, pk=attempt_pk).first()


def attempt_list_for_experiment(*, workspace: Workspace, experiment_id: str) -> list[ConclusionAttempt]:
    """Every conclusion attempt on one experiment, newest first (index attempt_ws_exp_idx)."""
    return list(ConclusionAttempt.objects.filter(workspace=workspace, experiment_id=experiment_id).order_by("-id"))


def attempt_made_as(*, workspace: Workspace, experiment_id: str, actor_suffix: str) -> ConclusionAttempt | None:
    """The first attempt on the experiment whose actor name ends with `actor_suffix` (" via
    schedule #7": the press a schedule made), or None."""
    attempts = ConclusionAttempt.objects.filter(
        workspace=workspace, experiment_id=experiment_id, actor_name__endswith=actor_suffix
    )
    return attempts.order_by("pk").first()


def attempt_list_to_reconcile(*, older_than: dt.timedelta, workspace_pk: int | None = None) -> list[ConclusionAttempt]:
    """Attempts left open that reconcile_conclusions should resolve, oldest first.

    The caller keeps `older_than` at least services.reconcile.in_flight_limit():
    younger attempts may still have their PUT on its way (and the reconcile service
    refuses to judge them anyway). Served by attempt_state_id_idx.
    """
    cutoff = timezone.now() - older_than
    attempts = ConclusionAttempt.objects.filter(
        state__in=ConclusionAttempt.OPEN_STATES, created_at__lte=cutoff
    ).select_related("workspace")
    if workspace_pk is not None:
        attempts = attempts.filter(workspace_id=workspace_pk)
    return list(attempts.order_by("id"))


def request_list_overdue(*, workspace_pk: int | None = None) -> list[ConclusionAttempt]:
    """Requests for approval whose window has passed but that are still waiting (their
    expiry task never ran: a worker that was down), oldest first."""
    requests = ConclusionAttempt.objects.filter(
        state=AttemptState.AWAITING_APPROVAL, expires_at__lte=timezone.now()
    ).select_related("workspace")
    if workspace_pk is not None:
        requests = requests.filter(workspace_id=workspace_pk)
    return list(requests.order_by("id"))


@dataclass(frozen=True, slots=True)
class DriftItem:
    """An experiment Mixpanel shows as concluded with no applied conclusion recorded here."""

    workspace: Workspace
    experiment: Experiment
    # States of the attempts we did record on it, newest first (often none).
    local_states: tuple[str, ...]


def conclusion_drift(*, workspace: Workspace, client: Any) -> list[DriftItem]:
    """Experiments concluded upstream (concluded, success or fail) without a
    succeeded or reconciled-applied attempt here: conclusions made outside the
    dashboard. One list call to Mixpanel (its errors propagate) and one query.
    """
    concluded = [e for e in client.list_experiments(workspace.mixpanel_workspace_id) if e.is_concluded]
    if not concluded:
        return []
    states: dict[str, list[str]] = {}
    rows = (
        ConclusionAttempt.objects.filter(workspace=workspace, experiment_id__in=[e.id for e in concluded])
        .order_by("-id")
        .values_list("experiment_id", "state")
    )
    for experiment_id, state in rows:
        states.setdefault(experiment_id, []).append(state)
    drift = [
        DriftItem(workspace=workspace, experiment=e, local_states=tuple(states.get(e.id, ())))
        for e in concluded
        if not ConclusionAttempt.APPLIED_STATES.intersection(states.get(e.id, ()))
    ]
    # Most recently ended first: the freshest surprises lead the report.
    epoch = dt.datetime.min.replace(tzinfo=dt.UTC)
    drift.sort(key=lambda item: (item.experiment.end_date or epoch, item.experiment.id), reverse=True)
    return drift
