"""Readers for the parts of an experiment whose shape Mixpanel does not publish.

variants, metrics, settings, exposures_cache and results_cache are opaque JSON: these
functions take what they recognise and let the rest through as plain text, so an
unexpected shape (lists, nesting, strings, nulls, huge values) shows less, never fails.
Pure: no I/O; they return numbers and plain text, the template makes HTML.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from experiments.dates import parse_datetime_or_none
from experiments.stats import SampleRatioTest, sample_ratio_test

# Where a variant may keep its name and its planned share of traffic.
VARIANT_KEY_FIELDS = ("key", "name", "variant", "value", "id", "title")
VARIANT_SPLIT_FIELDS = (
    "split",
    "percent",
    "percentage",
    "allocation",
    "traffic_allocation",
    "rollout_percentage",
    "rollout",
    "weight",
    "traffic",
)
# Where exposures_cache may keep its per-variant counts, and how a count may be wrapped.
EXPOSURE_CONTAINERS = ("counts", "variants", "exposures", "by_variant")
COUNT_FIELDS = ("count", "exposures", "exposed", "users", "value", "total")
# Where settings may keep the planned length of the experiment.
DURATION_DAY_FIELDS = ("duration_days", "planned_duration_days", "run_days", "duration")
DURATION_WEEK_FIELDS = ("duration_weeks", "planned_duration_weeks")
PLANNED_END_FIELDS = ("planned_end_date", "scheduled_end_date", "end_date")
# Known statistics in results_cache, by normalised key.
STAT_ALIASES = {
    "lift": "lift",
    "relative_lift": "lift",
    "uplift": "lift",
    "lift_percent": "lift",
    "p_value": "p_value",
    "pvalue": "p_value",
    "p": "p_value",
    "confidence": "confidence",
    "confidence_level": "confidence",
    "confidence_interval": "confidence",
    "significance": "significance",
    "significant": "significance",
    "is_significant": "significance",
    "statistically_significant": "significance",
    "stat_sig": "significance",
}
STATS = ("lift", "p_value", "confidence", "significance")
# Container names left out of a row's label: "Conversion · treatment" reads better than
# "metrics · Conversion · variants · treatment".
LABEL_NOISE = frozenset({"metrics", "variants", "results", "by_metric", "by_variant", "data", "stats"})
ITEM_LABEL_FIELDS = ("name", "metric", "metric_name", "variant", "variant_key", "key", "title", "id")
RESULTS_MAX_DEPTH = 8
RESULTS_MAX_ROWS = 100
RESULTS_MAX_PAIRS = 100
TEXT_LIMIT = 300


def _number(value: Any) -> float | None:
    """A finite number from a number or numeric text ("1,024", "50%"), else None. Never a bool."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        text = value.strip().rstrip("%").replace(",", "").strip()
        try:
            number = float(text)
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def _count(value: Any) -> int | None:
    """An exposure count: a whole, non-negative number, possibly wrapped in {"count": n}."""
    if isinstance(value, Mapping):
        value = next((value[f] for f in COUNT_FIELDS if f in value), None)
    number = _number(value)
    if number is None or number < 0 or number != int(number):
        return None
    return int(number)


def short_text(value: Any, limit: int = TEXT_LIMIT) -> str:
    """Any JSON value as one line of plain text, cut at `limit` characters."""
    if value is None:
        text = "—"
    elif isinstance(value, bool):
        text = "yes" if value else "no"
    elif isinstance(value, int):
        text = f"{value:,}"
    elif isinstance(value, float):
        text = f"{int(value):,}" if value.is_integer() and abs(value) < 1e15 else f"{value:.4g}"
    elif isinstance(value, str):
        text = value
    else:
        try:
            text = json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
        except (TypeError, ValueError):
            text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _label_of(item: Any, fields: tuple[str, ...]) -> str | None:
    if isinstance(item, Mapping):
        for field in fields:
            value = item.get(field)
            if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value).strip():
                return short_text(str(value), 120)
        return None
    if isinstance(item, (str, int)) and not isinstance(item, bool) and str(item).strip():
        return short_text(str(item), 120)
    return None


# --- Variants and exposures --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VariantRow:
    """One line of the variants table. Numbers are None where Mixpanel gave none we can read."""

    key: str
    name: str
    planned_percent: float | None
    exposures: int | None
    share_percent: float | None
    listed: bool = True  # False: named only in exposures_cache, not among the variants


@dataclass(frozen=True, slots=True)
class VariantTable:
    rows: tuple[VariantRow, ...]
    total: int | None
    planned_known: bool
    exposures_known: bool
    # (label, exposures, planned weight) for the sample-ratio test, when every row has both.
    testable: tuple[tuple[str, int, float], ...]


def _split(item: Any) -> float | None:
    if not isinstance(item, Mapping):
        return None
    for field in VARIANT_SPLIT_FIELDS:
        value = item.get(field)
        if isinstance(value, Mapping):  # {"allocation": {"percent": 50}}
            value = next((value[f] for f in VARIANT_SPLIT_FIELDS if f in value), None)
        number = _number(value)
        if number is not None:
            return number if number >= 0 else None
    return None


def exposure_counts(cache: Any) -> tuple[dict[str, int | None], int | None]:
    """Per-variant counts found in exposures_cache (None: present but unreadable), and a stated total."""
    stated = _count(cache.get("total")) if isinstance(cache, Mapping) else None
    if isinstance(cache, Mapping):
        cache = next((cache[c] for c in EXPOSURE_CONTAINERS if isinstance(cache.get(c), (Mapping, list))), cache)
    counts: dict[str, int | None] = {}
    if isinstance(cache, Mapping):
        for key, value in cache.items():
            if str(key) == "total" or isinstance(value, bool):
                continue  # a flag, not a count
            if isinstance(value, str) and _number(value) is None and not _looks_missing(value):
                continue  # a note, not a count
            counts[str(key)] = _count(value)
    elif isinstance(cache, list):
        for item in cache:
            label = _label_of(item, ("key", "variant", "variant_key", "name", "id"))
            if label is not None:
                counts[label] = _count(item)
    return counts, stated


def _looks_missing(text: str) -> bool:
    return text.strip().casefold() in {"n/a", "na", "none", "null", "-", "—", "unknown", ""}


def _variant_keys(variants: Any) -> list[tuple[str, str, float | None]]:
    keys: list[tuple[str, str, float | None]] = []
    for position, item in enumerate(variants if isinstance(variants, (list, tuple)) else (), start=1):
        key = _label_of(item, VARIANT_KEY_FIELDS) or f"Variant {position}"
        name = _label_of(item, ("name", "title")) or ""
        keys.append((key, name if name != key else "", _split(item)))
    return keys


def _lookup(counts: dict[str, int | None], key: str, name: str) -> tuple[str | None, int | None]:
    for candidate in (key, name):
        if candidate and candidate in counts:
            return candidate, counts[candidate]
    folded = {k.casefold(): k for k in counts}
    for candidate in (key, name):
        found = folded.get(candidate.casefold()) if candidate else None
        if found is not None:
            return found, counts[found]
    return None, None


def variant_table(variants: Any, exposures_cache: Any) -> VariantTable:
    """The variants with their planned split, exposures and share of all exposures."""
    counts, stated_total = exposure_counts(exposures_cache)
    listed = _variant_keys(variants)
    weights = [split for _, _, split in listed]
    planned_known = bool(listed) and all(w is not None for w in weights) and sum(w or 0 for w in weights) > 0
    weight_sum = sum(w or 0 for w in weights)
    matched: set[str] = set()
    raw_rows: list[tuple[str, str, float | None, float | None, int | None, bool]] = []
    for key, name, weight in listed:
        found, count = _lookup(counts, key, name)
        if found is not None:
            matched.add(found)
        planned = 100 * weight / weight_sum if planned_known and weight is not None else None
        raw_rows.append((key, name, planned, weight, count, True))
    for key, count in counts.items():
        if key not in matched:
            raw_rows.append((key, "", None, None, count, False))
    known = [row[4] for row in raw_rows if row[4] is not None]
    exposures_known = bool(raw_rows) and len(known) == len(raw_rows)
    total = sum(known) if known else stated_total
    rows = tuple(
        VariantRow(
            key=key,
            name=name,
            planned_percent=planned,
            exposures=count,
            share_percent=100 * count / total if exposures_known and total and count is not None else None,
            listed=is_listed,
        )
        for key, name, planned, _, count, is_listed in raw_rows
    )
    testable: tuple[tuple[str, int, float], ...] = ()
    if planned_known and exposures_known and all(row[5] for row in raw_rows):
        testable = tuple((key, count or 0, weight or 0.0) for key, _, _, weight, count, _ in raw_rows)
    return VariantTable(rows, total, planned_known, exposures_known, testable)


# Why a split was not checked, in a product manager's words.
SRM_NOTE_NO_PLAN = "The planned split is not given for every variant, so exposures cannot be checked against it."
SRM_NOTE_NO_COUNTS = "Exposures are not known for every variant, so they cannot be checked against the planned split."
SRM_NOTE_UNLISTED = "Exposures name a variant that is not in the variant list, so the split cannot be checked."
SRM_NOTE_TOO_FEW = "Too few exposures yet to check them against the planned split."


def sample_ratio_check(table: VariantTable) -> tuple[SampleRatioTest | None, str]:
    """The sample-ratio test of a variant table, or None and why it could not be run ("" without variants).

    The one rule for the split check: the experiment page shows its test, and the
    experiments list keeps its verdict per experiment (ExperimentSummary.sample_ratio_mismatch).
    """
    if not table.rows:
        return None, ""
    if not table.planned_known:
        return None, SRM_NOTE_NO_PLAN
    if not table.exposures_known:
        return None, SRM_NOTE_NO_COUNTS
    if not table.testable:
        return None, SRM_NOTE_UNLISTED
    test = sample_ratio_test(table.testable)
    return test, "" if test is not None else SRM_NOTE_TOO_FEW


# --- Results ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResultRow:
    """The known statistics of one metric (or metric and variant), as display text."""

    label: str
    lift: str
    p_value: str
    confidence: str
    significance: str


@dataclass(frozen=True, slots=True)
class ResultsSummary:
    rows: tuple[ResultRow, ...]
    pairs: tuple[tuple[str, str], ...]  # everything else, as (path, text)
    omitted: int  # entries past the display limits

    @property
    def empty(self) -> bool:
        return not self.rows and not self.pairs and not self.omitted


def _stat_name(key: Any) -> str | None:
    return STAT_ALIASES.get(str(key).strip().casefold().replace("-", "_").replace(" ", "_"))


def _is_stat_value(value: Any) -> bool:
    if isinstance(value, list):  # an interval: [low, high]
        return 0 < len(value) <= 3 and all(v is None or isinstance(v, (int, float, str)) for v in value)
    return value is None or isinstance(value, (bool, int, float, str))


def _stat_text(stat: str, value: Any) -> str:
    if isinstance(value, list):
        return " to ".join(_stat_text(stat, v) for v in value)
    number = _number(value) if not isinstance(value, str) else None
    if number is None:
        return short_text(value, 120)
    if stat == "p_value":
        return "< 0.001" if 0 <= number < 0.001 else f"{number:.3f}"
    if stat == "lift":
        return f"{number:+.4g}"
    return f"{number:.4g}"


class _ResultsWalk:
    """Collects rows of known statistics and key/value pairs from any JSON shape, within limits."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, ...], dict[str, str]] = {}
        self.pairs: list[tuple[str, str]] = []
        self.omitted = 0

    def stat(self, path: tuple[str, ...], stat: str, value: Any) -> None:
        if path not in self.rows and len(self.rows) >= RESULTS_MAX_ROWS:
            self.omitted += 1
            return
        self.rows.setdefault(path, {})[stat] = _stat_text(stat, value)

    def pair(self, path: tuple[str, ...], value: Any) -> None:
        if len(self.pairs) >= RESULTS_MAX_PAIRS:
            self.omitted += 1
            return
        self.pairs.append((" · ".join(path) or "(value)", short_text(value)))

    def walk(self, node: Any, path: tuple[str, ...], depth: int = 0) -> None:
        if isinstance(node, (Mapping, list)) and not node:
            return  # an empty container says nothing
        if depth > RESULTS_MAX_DEPTH:
            self.pair(path, node)
        elif isinstance(node, Mapping):
            self._mapping(node, path, depth)
        elif isinstance(node, list) and any(isinstance(item, (Mapping, list)) for item in node):
            for position, item in enumerate(node, start=1):
                label = _label_of(item, ITEM_LABEL_FIELDS) if isinstance(item, Mapping) else None
                if label is not None:
                    item = {k: v for k, v in item.items() if k not in ITEM_LABEL_FIELDS or str(v) != label}
                self.walk(item, (*path, label or f"#{position}"), depth + 1)
        else:
            self.pair(path, node)

    def _mapping(self, node: Mapping[Any, Any], path: tuple[str, ...], depth: int) -> None:
        for key, value in node.items():
            label = short_text(str(key), 120)
            stat = _stat_name(key)
            if stat and _is_stat_value(value):
                self.stat(path, stat, value)
            elif stat and isinstance(value, Mapping) and value and all(_is_stat_value(v) for v in value.values()):
                # {"lift": {"a": 0.02, "b": -0.01}}: one statistic per variant.
                for inner, inner_value in value.items():
                    self.stat((*path, short_text(str(inner), 120)), stat, inner_value)
            elif isinstance(value, (Mapping, list)):
                self.walk(value, (*path, label), depth + 1)
            else:
                self.pair((*path, label), value)


def _row_label(path: tuple[str, ...]) -> str:
    shown = [part for part in path if part.casefold() not in LABEL_NOISE]
    return " · ".join(shown) or "Overall"


def results_summary(results_cache: Any) -> ResultsSummary:
    """Known statistics (lift, p-value, confidence, significance) per metric, and the rest as pairs."""
    walk = _ResultsWalk()
    if isinstance(results_cache, (Mapping, list)):
        walk.walk(results_cache, ())
    elif results_cache is not None:
        walk.pair((), results_cache)
    rows = tuple(
        ResultRow(_row_label(path), *(stats.get(name, "—") for name in STATS)) for path, stats in walk.rows.items()
    )
    return ResultsSummary(rows, tuple(walk.pairs), walk.omitted)


def variant_lifts(results_cache: Any) -> dict[str, tuple[str, str]]:
    """Per variant (by its key, casefolded): the first lift the results give for it, as text,
    and the metric it is about: {"treatment": ("+0.034", "Conversion")}. A row whose label's
    last part is a variant key is that variant's; a variant with no lift is left out."""
    walk = _ResultsWalk()
    if isinstance(results_cache, (Mapping, list)):
        walk.walk(results_cache, ())
    lifts: dict[str, tuple[str, str]] = {}
    for path, stats in walk.rows.items():
        shown = [part for part in path if part.casefold() not in LABEL_NOISE]
        if "lift" in stats and len(shown) >= 2:
            lifts.setdefault(shown[-1].casefold(), (stats["lift"], " · ".join(shown[:-1])))
    return lifts


def control_variant(variants: Any) -> str | None:
    """The key of the variant Mixpanel marks as the control (is_control or control set), else of
    one keyed or named "control"; None when no variant is recognisably the control."""
    keys = _variant_keys(variants)
    items = variants if isinstance(variants, (list, tuple)) else ()
    for (key, _, _), item in zip(keys, items, strict=False):
        if isinstance(item, Mapping) and (item.get("is_control") is True or item.get("control") is True):
            return key
    return next((key for key, name, _ in keys if "control" in (key.casefold(), name.casefold())), None)


# --- Metrics ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MetricRow:
    label: str
    kind: str
    primary: str
    details: str


def metric_rows(metrics: Any) -> tuple[MetricRow, ...]:
    """One row per metric: its name, type, whether it is primary, and its other fields as text."""
    rows = []
    for position, item in enumerate(metrics if isinstance(metrics, (list, tuple)) else (), start=1):
        label = _label_of(item, ("name", "title", "key", "id")) or f"Metric {position}"
        if not isinstance(item, Mapping):
            rows.append(MetricRow(label, "", "", "" if label == str(item) else short_text(item)))
            continue
        kind = short_text(item["type"], 60) if isinstance(item.get("type"), str) else ""
        primary = item.get("is_primary", item.get("primary"))
        shown = {"name", "title", "type", "is_primary", "primary"}
        details = "; ".join(f"{k}: {short_text(v, 120)}" for k, v in item.items() if k not in shown)
        rows.append(MetricRow(label, kind, short_text(primary) if isinstance(primary, bool) else "", details))
    return tuple(rows)


# --- Timing -------------------------------------------------------------------------------


def days_running(experiment: Any, now: dt.datetime) -> int | None:
    """Whole days from start to end (a concluded one) or to now; None before it starts.

    Takes an Experiment or the list's ExperimentSummary, so the page and the list agree.
    """
    start = experiment.start_date
    if start is None or start > now:
        return None
    end = experiment.end_date if experiment.is_concluded and experiment.end_date is not None else now
    return max(0, (min(end, now) - start).days)


def planned_days(settings: Any) -> int | None:
    """The planned length in whole days, when settings say it: a number of days or weeks,
    or {"value": n, "unit": "days" | "weeks"}."""
    if not isinstance(settings, Mapping):
        return None
    for fields, unit_days in ((DURATION_DAY_FIELDS, 1), (DURATION_WEEK_FIELDS, 7)):
        for field in fields:
            value, days = settings.get(field), unit_days
            if isinstance(value, Mapping):
                unit = str(value.get("unit", "days")).casefold()
                days = 7 if unit.startswith("week") else 1 if unit.startswith("day") else 0
                value = value.get("value", value.get("days"))
            number = _number(value)
            if number is not None and number > 0 and days:
                return int(number * days)
    return None


def planned_end(settings: Any) -> dt.datetime | None:
    """A planned end date-time, when settings hold one (see planned_finish for the rule the pages use)."""
    if not isinstance(settings, Mapping):
        return None
    for field in PLANNED_END_FIELDS:
        when = parse_datetime_or_none(settings.get(field))
        if when is not None:
            return when
    return None


def planned_finish(settings: Any, start: dt.datetime | None) -> dt.datetime | None:
    """When the experiment is planned to end, by the experiment page's rule: its planned length
    counted from its start when both are known, else a planned end date in settings, else None."""
    days = planned_days(settings)
    if days is not None and start is not None:
        return start + dt.timedelta(days=days)
    return planned_end(settings)
