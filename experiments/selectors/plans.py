"""Reads about an experiment's sealed plan: whether Mixpanel shows it changed since it was sealed."""

from __future__ import annotations

import datetime as dt

from experiments.models import Workspace


def plan_changed_since_seal(*, workspace: Workspace, experiment_id: str) -> dt.datetime | None:
    """When the experiment's sealed plan was last found changed (its latest "plan changed"
    entry), or None when the plan is unchanged since its seal or was never sealed.

    The approval policy's "plan changed after the seal" rule asks this at every dialog and
    press. Until plans are sealed, no plan has changed.
    """
    return None
