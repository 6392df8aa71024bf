"""An experiment's plan in canonical form: what it set out to test, before the data came in.

The plan is the hypothesis, the variants (with their planned split), the metrics and the
settings (the planned length and everything else Mixpanel keeps there), as received. Its
canonical JSON (sorted keys, no insignificant space) has one text per plan, so its SHA-256
names it; Mixpanel's `modified` is kept beside the plan, not in it, because Mixpanel moves
it for edits that change no part of the plan. Pure: no I/O.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from experiments.mixpanel.experiment import Experiment

PLAN_FIELDS = ("hypothesis", "variants", "metrics", "settings")
# How deep a difference is named ("settings.duration_days") before a whole value is shown.
_DIFF_DEPTH = 3


@dataclass(frozen=True, slots=True)
class Plan:
    """An experiment's plan as canonical JSON text, its hash, and Mixpanel's `modified` beside it."""

    data: dict[str, Any]
    text: str
    hash: str
    modified: dt.datetime | None


def _json_value(value: Any) -> Any:
    # Opaque upstream JSON as plain JSON values (tuples as lists); anything odd as its text.
    return json.loads(json.dumps(value, default=str))


def canonical_text(data: Any) -> str:
    """One text for one value: sorted keys, no insignificant space, UTF-8 kept."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def experiment_plan(experiment: Experiment) -> Plan:
    """The plan of `experiment`, in canonical form, with its hash and Mixpanel's `modified`."""
    data = {
        "hypothesis": experiment.hypothesis or "",
        "variants": _json_value(list(experiment.variants or ())),
        "metrics": _json_value(list(experiment.metrics or ())),
        "settings": _json_value(experiment.settings if experiment.settings is not None else {}),
    }
    text = canonical_text(data)
    return Plan(
        data=data, text=text, hash=hashlib.sha256(text.encode("utf-8")).hexdigest(), modified=experiment.modified
    )


def plan_changes(before: Any, after: Any, *, path: str = "", depth: int = 0) -> list[dict[str, Any]]:
    """What differs between two plans: one {"field", "before", "after"} per changed field, a
    field named by its path ("settings.duration_days"); a missing side is None."""
    if before == after:
        return []
    if isinstance(before, dict) and isinstance(after, dict) and depth < _DIFF_DEPTH:
        changes: list[dict[str, Any]] = []
        for key in sorted(set(before) | set(after), key=str):
            field = f"{path}.{key}" if path else str(key)
            changes.extend(plan_changes(before.get(key), after.get(key), path=field, depth=depth + 1))
        return changes
    return [{"field": path or "plan", "before": before, "after": after}]


def changed_fields(changes: list[dict[str, Any]]) -> str:
    """The changed fields as a person reads them: "settings.duration_days, hypothesis"."""
    return ", ".join(str(change.get("field", "")) for change in changes if isinstance(change, dict))
