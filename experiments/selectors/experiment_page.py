"""Reads for the experiment page: the experiment read by id, and what a person deciding needs.

The page reads the experiment itself from Mixpanel rather than taking it from the cached
list: the list may be kept as a compact summary, and the page needs the whole object
(variants, settings, exposure and result caches). A copy is reused for a few seconds so
going back and forth between the list and the page does not wait on Mixpanel each time.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from django.conf import settings
from django.core.cache import cache
from django.db.models import Q
from django.utils import timezone

from experiments.mixpanel import client as mixpanel
from experiments.mixpanel import shapes
from experiments.mixpanel.errors import MixpanelError, MixpanelNotFound
from experiments.mixpanel.experiment import Experiment
from experiments.models import ConclusionAttempt, Workspace
from experiments.stats import SampleRatioTest

DETAIL_CACHE_PREFIX = "experiment-detail:v1"
# As long as ConclusionAttempt.experiment_id can be: a longer id is no experiment of ours,
# and not worth a call to Mixpanel.
EXPERIMENT_ID_MAX_LENGTH = 100
MIXPANEL_UI_HOSTS = {"us": "mixpanel.com", "eu": "eu.mixpanel.com", "in": "in.mixpanel.com"}
MSG_NOT_FOUND = "This workspace has no such experiment."
MSG_OTHER_ID = "Mixpanel answered with a different experiment."


class ExperimentNotFound(Exception):
    """Mixpanel has no such experiment in this workspace."""


@dataclass(frozen=True, slots=True)
class ExperimentRead:
    """The experiment as read from Mixpanel, when it was read, or why it could not be."""

    experiment: Experiment | None
    read_at: dt.datetime | None
    error: str = ""


def _cache_key(workspace: Workspace, experiment_id: str) -> str:
    # Region and Mixpanel id are part of the key: editing a workspace never shows another's experiment.
    digest = hashlib.sha256(experiment_id.encode("utf-8")).hexdigest()[:32]
    return f"{DETAIL_CACHE_PREFIX}:{workspace.pk}:{workspace.region}:{workspace.mixpanel_workspace_id}:{digest}"


def _attempted_since(workspace: Workspace, experiment_id: str, when: dt.datetime) -> bool:
    return ConclusionAttempt.objects.filter(
        Q(created_at__gte=when) | Q(finished_at__gte=when), workspace=workspace, experiment_id=experiment_id
    ).exists()


def experiment_read(*, workspace: Workspace, client: Any = None, experiment_id: str) -> ExperimentRead:
    """The experiment, read by id from Mixpanel; a copy of EXPERIMENT_DETAIL_CACHE_SECONDS is reused.

    Raises ExperimentNotFound when Mixpanel has no such experiment in the workspace.
    Any other failure returns a read without experiment and with a readable error.
    A copy read before a conclusion attempt on the experiment began or ended is not
    reused, so the page shows what that attempt changed.
    """
    if not experiment_id or len(experiment_id) > EXPERIMENT_ID_MAX_LENGTH:
        raise ExperimentNotFound(MSG_NOT_FOUND)
    key = _cache_key(workspace, experiment_id)
    seconds = settings.EXPERIMENT_DETAIL_CACHE_SECONDS
    cached = cache.get(key) if seconds > 0 else None
    if cached is not None and not _attempted_since(workspace, experiment_id, cached["read_at"]):
        return ExperimentRead(cached["experiment"], cached["read_at"])
    try:
        # No client given: the workspace's own, built only now that Mixpanel must be asked.
        if client is None:
            client = mixpanel.client_for(workspace)
        experiment = client.get_experiment(workspace.mixpanel_workspace_id, experiment_id)
    except MixpanelNotFound:
        raise ExperimentNotFound(MSG_NOT_FOUND) from None
    except MixpanelError as exc:
        return ExperimentRead(None, None, str(exc) or MixpanelError.default_message)
    if experiment.id != experiment_id:
        return ExperimentRead(None, None, MSG_OTHER_ID)
    read_at = timezone.now()
    if seconds > 0:
        cache.set(key, {"experiment": experiment, "read_at": read_at}, seconds)
    return ExperimentRead(experiment, read_at)


@dataclass(frozen=True, slots=True)
class ExperimentOverview:
    """What the experiment page leads with, prepared from the experiment's opaque fields."""

    days_running: int | None
    days_left: int | None
    planned_days: int | None
    owner: str
    owner_email: str
    mixpanel_url: str
    variants: shapes.VariantTable
    srm: SampleRatioTest | None
    srm_note: str
    results: shapes.ResultsSummary
    metrics: tuple[shapes.MetricRow, ...]


def mixpanel_ui_url(workspace: Workspace, experiment_id: str) -> str:
    """Our best guess at Mixpanel's own address for an experiment (not published), or ""."""
    if not workspace.mixpanel_project_id:
        return ""
    host = MIXPANEL_UI_HOSTS.get(workspace.region, "mixpanel.com")
    return (
        f"https://{host}/project/{workspace.mixpanel_project_id}/view/{workspace.mixpanel_workspace_id}"
        f"/app/experiments/{quote(experiment_id, safe='')}"
    )


def _days_left(experiment: Experiment, running: int | None, planned: int | None, now: dt.datetime) -> int | None:
    # Only an active experiment has days left; a planned length counts from its start.
    if not experiment.is_active:
        return None
    if planned is not None and running is not None:
        return max(0, planned - running)
    end = shapes.planned_end(experiment.settings)
    return max(0, (end - now).days) if end is not None else None


@dataclass(frozen=True, slots=True)
class VariantOption:
    """One variant as the decision dialog offers it, with the evidence beside it: its
    exposures and the first lift the results give for it ("+0.034 on Conversion")."""

    key: str
    exposures: int | None
    lift: str
    is_control: bool


def decision_options(*, experiment: Experiment) -> tuple[VariantOption, ...]:
    """The variants a decision may ship, in the variants table's order (the same keys the
    decision service accepts), each with its exposures, lift and whether it is the control."""
    table = shapes.variant_table(experiment.variants, experiment.exposures_cache)
    lifts = shapes.variant_lifts(experiment.results_cache)
    control = shapes.control_variant(experiment.variants)
    options = []
    for row in table.rows:
        if not row.listed:
            continue
        lift, metric = lifts.get(row.key.casefold(), ("", ""))
        shown = f"{lift} on {metric}" if lift and metric else lift
        options.append(VariantOption(row.key, row.exposures, shown, is_control=row.key == control))
    return tuple(options)


def experiment_overview(
    *, workspace: Workspace, experiment: Experiment, now: dt.datetime | None = None
) -> ExperimentOverview:
    """Timing, owner, variants with exposures and the sample-ratio test, results and metrics.

    Never fails on an unexpected shape: what cannot be read is left out or shown as text.
    """
    now = now or timezone.now()
    running = shapes.days_running(experiment, now)
    planned = shapes.planned_days(experiment.settings)
    table = shapes.variant_table(experiment.variants, experiment.exposures_cache)
    srm, srm_note = shapes.sample_ratio_check(table)
    return ExperimentOverview(
        days_running=running,
        days_left=_days_left(experiment, running, planned, now),
        planned_days=planned,
        owner=experiment.creator_name or "",
        owner_email=experiment.creator_email or "",
        mixpanel_url=mixpanel_ui_url(workspace, experiment.id),
        variants=table,
        srm=srm,
        srm_note=srm_note,
        results=shapes.results_summary(experiment.results_cache),
        metrics=shapes.metric_rows(experiment.metrics),
    )
