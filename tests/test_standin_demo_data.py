"""The stand-in's demo data shows the experiment page's states: a ratio mismatch, results, plausible exposures."""

from __future__ import annotations

import datetime as dt

from experiments.mixpanel.experiment import parse_experiment
from experiments.models import Region, Workspace
from experiments.selectors.experiment_page import experiment_overview
from experiments.standin.data import DEMO_WORKSPACES, build_workspace

DAY = dt.datetime(2026, 11, 29, tzinfo=dt.UTC)


def overviews(count: int) -> list:
    workspace = Workspace(name="Growth", region=Region.US, mixpanel_workspace_id=1001, mixpanel_project_id=77)
    rows, _ = build_workspace(DEMO_WORKSPACES[0], seed=1, count=count, today=DAY)
    return [(row, experiment_overview(workspace=workspace, experiment=parse_experiment(row), now=DAY)) for row in rows]


def test_exposure_counts_are_never_negative():
    rows, _ = build_workspace(DEMO_WORKSPACES[1], seed=1, count=10_000, today=DAY)
    counts = [n for row in rows for n in (row["exposures_cache"] or {}).values() if isinstance(n, int)]
    assert counts
    assert min(counts) >= 0


def test_only_the_showcase_mismatch_shows_a_sample_ratio_mismatch():
    flagged = [row["name"] for row, overview in overviews(2_000) if overview.srm is not None and overview.srm.mismatch]
    assert flagged == ["Growth one-page checkout (exposures off the planned split)"]


def test_demo_data_has_results_to_show_and_a_planned_length():
    shown = [(row["name"], overview) for row, overview in overviews(60)]
    with_results = [name for name, overview in shown if overview.results.rows]
    assert len(with_results) >= 3
    assert any(overview.days_left is not None for _, overview in shown)
