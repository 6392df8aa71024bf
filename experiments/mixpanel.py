"""The one module that speaks HTTP to Mixpanel's Experiments API.

Contract: ../shared/mixpanel-experiments-api.md. Everything received is untrusted:
it is parsed here, at the boundary, into frozen dataclasses, and the full JSON is
kept alongside as opaque data for the audit trail.

INTERFACE FROZEN FOR PARALLEL WORK: the names below are used by selectors,
services and views. The HTTP internals are being filled in (issue 3).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

STATUSES = ("draft", "active", "concluded", "success", "fail")
CONCLUDED_STATUSES = frozenset({"concluded", "success", "fail"})


# --- Errors ------------------------------------------------------------------
class MixpanelError(Exception):
    """Base of every failure talking to Mixpanel. `str(exc)` is readable by a PM.

    Attributes are data for the audit trail; none ever holds the secret.
    """

    default_message = "Mixpanel could not be reached."

    def __init__(
        self,
        message: str | None = None,
        *,
        http_status: int | None = None,
        body_excerpt: str = "",
        duration_ms: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.message = message or self.default_message
        self.http_status = http_status
        self.body_excerpt = body_excerpt
        self.duration_ms = duration_ms
        self.retry_after = retry_after
        super().__init__(self.message)

    # True only where a state-changing request may have been applied upstream.
    outcome_unknown = False


class MixpanelConfigError(MixpanelError):
    default_message = (
        "Mixpanel is not configured: set MIXPANEL_SERVICE_ACCOUNT_USERNAME and "
        "MIXPANEL_SERVICE_ACCOUNT_SECRET (or their *_FILE variants)."
    )


class MixpanelUnavailable(MixpanelError):
    default_message = "Mixpanel is unavailable right now (no connection, timeout or server error). Try again later."


class MixpanelRateLimited(MixpanelError):
    default_message = "Mixpanel is rate limiting us. Wait a minute and try again."


class MixpanelAuthError(MixpanelError):
    default_message = "Mixpanel refused the service account (credentials invalid, expired, or lacking access)."


class MixpanelNotFound(MixpanelError):
    default_message = "Mixpanel has no such experiment in this workspace."


class MixpanelRejected(MixpanelError):
    default_message = "Mixpanel rejected the request."


class MixpanelBadResponse(MixpanelError):
    default_message = "Mixpanel answered with something that is not a valid response."


class MixpanelOutcomeUnknown(MixpanelError):
    """The PUT was (or may have been) sent, and no trustworthy answer came back."""

    default_message = (
        "The request was sent to Mixpanel but no trustworthy answer came back, so we do not know "
        "whether it was applied. It will be reconciled by reading the experiment; do not retry blindly."
    )
    outcome_unknown = True


# --- Parsed data ---------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Experiment:
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
    def is_active(self) -> bool:
        return self.status == "active"

    @property
    def is_concluded(self) -> bool:
        return self.status in CONCLUDED_STATUSES

    @property
    def variants_count(self) -> int:
        return len(self.variants) if isinstance(self.variants, (list, tuple)) else 0

    @property
    def exposures_total(self) -> int | None:
        """Sum of numeric counts in exposures_cache when its shape allows, else None.

        The shape is unpublished; we accept {"variant": n, ...} or {"total": n} or
        {"counts": {...}} and give up quietly on anything else.
        """
        cache = self.exposures_cache
        if not isinstance(cache, Mapping):
            return None
        total = cache.get("total")
        if isinstance(total, int) and not isinstance(total, bool):
            return total
        counts = cache.get("counts", cache)
        if not isinstance(counts, Mapping):
            return None
        numbers = [v for v in counts.values() if isinstance(v, int) and not isinstance(v, bool)]
        return sum(numbers) if numbers else None


@dataclass(frozen=True, slots=True)
class ConcludeResult:
    """What a successful force conclude returned."""

    experiment: Experiment
    http_status: int
    duration_ms: int
    raw_body: str  # as received, capped in size
    truncated: bool = False


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def _when(value: Any) -> dt.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed


def parse_experiment(data: Any) -> Experiment:
    """Build an Experiment from one JSON object; raise MixpanelBadResponse if unusable.

    Only `id` and `status` are required; every other field tolerates absence,
    null and unexpected types.
    """
    if not isinstance(data, Mapping):
        raise MixpanelBadResponse("Mixpanel returned an experiment that is not a JSON object.")
    exp_id = data.get("id")
    status = data.get("status")
    if not isinstance(exp_id, (str, int)) or isinstance(exp_id, bool) or str(exp_id) == "":
        raise MixpanelBadResponse("Mixpanel returned an experiment without an id.")
    if not isinstance(status, str):
        raise MixpanelBadResponse("Mixpanel returned an experiment without a status.")
    tags = data.get("tags")
    return Experiment(
        id=str(exp_id),
        name=_text(data.get("name")) or "",
        status=status,
        description=_text(data.get("description")),
        hypothesis=_text(data.get("hypothesis")),
        created=_when(data.get("created")),
        modified=_when(data.get("modified")),
        start_date=_when(data.get("start_date")),
        end_date=_when(data.get("end_date")),
        deleted=_when(data.get("deleted")),
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


def format_end_date(value: dt.datetime) -> str:
    """The one place that decides how end_date is sent: ISO 8601, UTC, explicit Z."""
    return value.astimezone(dt.UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- The client ------------------------------------------------------------------
class MixpanelClient:
    """A client per (region, service account), holding one requests.Session.

    To be completed (issue 3): base URL per region or MIXPANEL_API_BASE_URL, Basic
    auth, User-Agent, timeouts + total deadline, size cap, no redirects, bounded
    retries of reads only, error mapping to the exceptions above.
    """

    def __init__(self, *, region: str, username: str, secret: str, base_url: str | None = None) -> None:
        raise NotImplementedError

    def list_experiments(self, workspace_id: int) -> list[Experiment]:
        """GET /workspaces/{id}/experiments."""
        raise NotImplementedError

    def get_experiment(self, workspace_id: int, experiment_id: str) -> Experiment:
        """GET /workspaces/{id}/experiments/{experiment_id}."""
        raise NotImplementedError

    def force_conclude(self, workspace_id: int, experiment_id: str, *, end_date: dt.datetime) -> ConcludeResult:
        """PUT .../force_conclude with {"end_date": ...}; never retried."""
        raise NotImplementedError


def client_for(workspace: Any) -> MixpanelClient:
    """The seam: the client for a workspace's region with the configured account.

    Views and commands call this; tests replace it (or point MIXPANEL_API_BASE_URL
    at the stand-in). Credentials are read from the environment here, per call.
    """
    raise NotImplementedError
