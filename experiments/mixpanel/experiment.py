"""An experiment as Mixpanel sends it, parsed at the boundary into frozen dataclasses.

Everything received is untrusted: only `id` and `status` are required, every other
field tolerates absence, null and unexpected types, and the whole object is kept as
received (`raw`) for the audit trail. Pure: no I/O.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from experiments.dates import parse_datetime_or_none
from experiments.mixpanel.errors import MixpanelBadResponse
from experiments.mixpanel.shapes import planned_finish, sample_ratio_check, variant_table

STATUSES = ("draft", "active", "concluded", "success", "fail")
CONCLUDED_STATUSES = frozenset({"concluded", "success", "fail"})
# A decided experiment: "success" (a variant shipped) or "fail" (none shipped).
DECIDED_STATUSES = frozenset({"success", "fail"})

MSG_BAD_ID = "Mixpanel returned an experiment whose id holds control characters ({id}); it cannot be used."


class _Status:
    """What an experiment's status means, for the experiment and its summary alike."""

    __slots__ = ()
    status: str

    @property
    def is_active(self) -> bool:
        return self.status == "active"

    @property
    def is_concluded(self) -> bool:
        return self.status in CONCLUDED_STATUSES


@dataclass(frozen=True, slots=True)
class Experiment(_Status):
    """An experiment as Mixpanel described it, with the fields the dashboard uses."""

    id: str
    name: str
    status: str
    description: str | None = None
    hypothesis: str | None = None
    created: dt.datetime | None = None
    modified: dt.datetime | None = None
    start_date: dt.datetime | None = None
    end_date: dt.datetime | None = None
    deleted: dt.datetime | None = None
    creator_name: str | None = None
    creator_email: str | None = None
    last_modified_by_name: str | None = None
    last_modified_by_email: str | None = None
    tags: tuple[str, ...] = ()
    variants: Any = ()
    metrics: Any = ()
    settings: Any = None
    exposures_cache: Any = None
    results_cache: Any = None
    feature_flag: Any = None
    # The whole object as received, for the audit trail and "show raw JSON".
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def variants_count(self) -> int:
        return len(self.variants) if isinstance(self.variants, (list, tuple)) else 0

    @property
    def exposures_total(self) -> int | None:
        """Sum of the numeric counts in exposures_cache when its shape allows, else None."""
        return exposures_total(self.exposures_cache)


@dataclass(frozen=True, slots=True)
class VariantSummary:
    """One variant as the list keeps it: its key, planned split and exposures (each None when unknown)."""

    key: str
    split: float | None
    exposures: int | None


@dataclass(frozen=True, slots=True)
class ExperimentSummary(_Status):
    """What the experiments list keeps of one experiment: a few hundred bytes instead of the whole object.

    The list page, its search and its sorts need only these fields; the experiment page
    reads the experiment itself. Per variant, key, planned split and exposures are kept
    so that list-wide checks of the split need no second read. `sample_ratio_mismatch`
    is the experiment page's split check, run once when the list is read: True when
    exposures do not follow the planned split, False when they do, None when it cannot
    be checked (shapes.sample_ratio_check says why).
    """

    id: str
    name: str
    status: str
    created: dt.datetime | None = None
    start_date: dt.datetime | None = None
    end_date: dt.datetime | None = None
    deleted: dt.datetime | None = None
    creator_name: str | None = None
    creator_email: str | None = None
    hypothesis: str | None = None
    last_modified_by_name: str | None = None  # the drift report names who concluded it elsewhere
    tags: tuple[str, ...] = ()
    variants: tuple[VariantSummary, ...] = ()
    exposures_total: int | None = None
    sample_ratio_mismatch: bool | None = None
    # When it is planned to end (shapes.planned_finish, the experiment page's rule) and when
    # Mixpanel last changed it: what the rules of decisions owed read.
    planned_end: dt.datetime | None = None
    modified: dt.datetime | None = None

    @property
    def variants_count(self) -> int:
        return len(self.variants)


@dataclass(frozen=True, slots=True)
class ConcludeResult:
    """What a successful force conclude or decide returned."""

    experiment: Experiment
    http_status: int
    duration_ms: int
    raw_body: str  # as received, capped in size
    truncated: bool = False


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _exposure_counts(cache: Any) -> Mapping[str, Any]:
    # The shape is unpublished; we accept {"variant": n, ...} and {"counts": {...}}
    # ({"total": n} carries no per-variant counts) and give up quietly on anything else.
    counts = cache.get("counts", cache) if isinstance(cache, Mapping) else None
    return counts if isinstance(counts, Mapping) else {}


def exposures_total(cache: Any) -> int | None:
    """Total exposures from an exposures_cache: its "total", else the sum of its counts, else None."""
    if not isinstance(cache, Mapping):
        return None
    total = _count(cache.get("total"))
    if total is not None:
        return total
    numbers = [n for n in (_count(v) for v in _exposure_counts(cache).values()) if n is not None]
    return sum(numbers) if numbers else None


def variant_summaries(variants: Any, cache: Any) -> tuple[VariantSummary, ...]:
    """Key, planned split (percent of traffic) and exposures of each listed variant.

    Read by the experiment page's own rule (experiments.mixpanel.shapes), so the list
    and the page never disagree about a variant.
    """
    if not variants:
        return ()
    return _listed_variants(variant_table(variants, cache))


def _listed_variants(table: Any) -> tuple[VariantSummary, ...]:
    return tuple(VariantSummary(row.key, row.planned_percent, row.exposures) for row in table.rows if row.listed)


def _usable_id(value: Any) -> str:
    """The experiment's id as text; MixpanelBadResponse when it cannot be used safely.

    An id is sent back in URL paths and stored in the database: a control character
    (NUL above all, which PostgreSQL refuses in text) would break every page that shows it.
    """
    if not isinstance(value, (str, int)) or isinstance(value, bool) or str(value) == "":
        raise MixpanelBadResponse("Mixpanel returned an experiment without an id.")
    text = str(value)
    if has_control_characters(text):
        raise MixpanelBadResponse(MSG_BAD_ID.format(id=ascii(text)[1:-1][:100]))
    return text


def has_control_characters(text: str) -> bool:
    """Whether `text` holds a control character (C0, DEL or C1): no experiment id we can use does."""
    return any(ord(ch) < 32 or 127 <= ord(ch) < 160 for ch in text)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def parse_experiment(data: Any) -> Experiment:
    """Build an Experiment from one JSON object; raise MixpanelBadResponse if unusable.

    Only `id` and `status` are required; every other field tolerates absence,
    null and unexpected types.
    """
    if not isinstance(data, Mapping):
        raise MixpanelBadResponse("Mixpanel returned an experiment that is not a JSON object.")
    exp_id = _usable_id(data.get("id"))
    status = data.get("status")
    if not isinstance(status, str):
        raise MixpanelBadResponse("Mixpanel returned an experiment without a status.")
    tags = data.get("tags")
    return Experiment(
        id=exp_id,
        name=_text(data.get("name")) or "",
        status=status,
        description=_text(data.get("description")),
        hypothesis=_text(data.get("hypothesis")),
        created=parse_datetime_or_none(data.get("created")),
        modified=parse_datetime_or_none(data.get("modified")),
        start_date=parse_datetime_or_none(data.get("start_date")),
        end_date=parse_datetime_or_none(data.get("end_date")),
        deleted=parse_datetime_or_none(data.get("deleted")),
        creator_name=_text(data.get("creator_name")),
        creator_email=_text(data.get("creator_email")),
        last_modified_by_name=_text(data.get("last_modified_by_name")),
        last_modified_by_email=_text(data.get("last_modified_by_email")),
        tags=tuple(str(t) for t in tags) if isinstance(tags, list) else (),
        variants=data.get("variants") if isinstance(data.get("variants"), list) else (),
        metrics=data.get("metrics") if isinstance(data.get("metrics"), list) else (),
        settings=data.get("settings"),
        exposures_cache=data.get("exposures_cache"),
        results_cache=data.get("results_cache"),
        feature_flag=data.get("feature_flag"),
        raw=data,
    )


def summarize_experiment(data: Any, shared: dict[Any, Any] | None = None) -> ExperimentSummary:
    """The list's summary of one experiment object; MixpanelBadResponse if unusable (as parse_experiment).

    `shared` lets one list reuse a single copy of values many experiments repeat
    (status, creator, tags, variant keys): a 10,000-row list then holds each once.
    """
    if not isinstance(data, Mapping):
        raise MixpanelBadResponse("Mixpanel returned an experiment that is not a JSON object.")
    exp_id = _usable_id(data.get("id"))
    status = data.get("status")
    if not isinstance(status, str):
        raise MixpanelBadResponse("Mixpanel returned an experiment without a status.")
    one = (lambda value: shared.setdefault(value, value)) if shared is not None else (lambda value: value)
    tags = data.get("tags")
    cache = data.get("exposures_cache")
    # One variant table serves both the variants kept and the split check, by the page's rules.
    table = variant_table(data.get("variants"), cache)
    variants = tuple(one(VariantSummary(one(v.key), v.split, v.exposures)) for v in _listed_variants(table))
    split_test, _ = sample_ratio_check(table)
    start_date = parse_datetime_or_none(data.get("start_date"))
    return ExperimentSummary(
        id=exp_id,
        name=_text(data.get("name")) or "",
        status=one(status),
        created=parse_datetime_or_none(data.get("created")),
        start_date=start_date,
        end_date=parse_datetime_or_none(data.get("end_date")),
        deleted=parse_datetime_or_none(data.get("deleted")),
        creator_name=one(_text(data.get("creator_name"))),
        creator_email=one(_text(data.get("creator_email"))),
        hypothesis=_text(data.get("hypothesis")),
        last_modified_by_name=one(_text(data.get("last_modified_by_name"))),
        tags=one(tuple(one(str(t)) for t in tags)) if isinstance(tags, list) else (),
        variants=one(variants),
        exposures_total=exposures_total(cache),
        sample_ratio_mismatch=split_test.mismatch if split_test is not None else None,
        planned_end=planned_finish(data.get("settings"), start_date),
        modified=parse_datetime_or_none(data.get("modified")),
    )


def format_end_date(value: dt.datetime) -> str:
    """The one place that decides how end_date is sent: ISO 8601, UTC, explicit Z."""
    # isoformat, not strftime: %Y does not pad years before 1000 on every platform.
    return value.astimezone(dt.UTC).replace(microsecond=0, tzinfo=None).isoformat() + "Z"
