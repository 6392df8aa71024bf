"""The one module that speaks HTTP to Mixpanel's Experiments API.

Contract: ../shared/mixpanel-experiments-api.md. Everything received is untrusted:
it is parsed here, at the boundary, into frozen dataclasses, and the full JSON is
kept alongside as opaque data for the audit trail.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import email.utils
import hmac
import html
import io
import json
import logging
import os
import random
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, quote_plus, unquote_plus, urljoin, urlsplit

import ijson
import requests
import urllib3
from requests.adapters import HTTPAdapter
from requests.auth import HTTPBasicAuth
from urllib3.exceptions import NewConnectionError
from urllib3.util.retry import Retry

from experiments.dates import parse_iso_datetime

STATUSES = ("draft", "active", "concluded", "success", "fail")
CONCLUDED_STATUSES = frozenset({"concluded", "success", "fail"})
# A decided experiment: "success" (a variant shipped) or "fail" (none shipped).
DECIDED_STATUSES = frozenset({"success", "fail"})


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
    """The dashboard's own Mixpanel settings are missing or wrong.

    `message` is what people see, in plain words; `detail` names what to fix, for
    operators: commands print it, and it is logged when the error is made.
    """

    default_message = (
        "Mixpanel is not set up correctly for this dashboard. Ask the dashboard's operators to check its "
        "Mixpanel settings."
    )
    default_detail = (
        "Mixpanel is not configured: set MIXPANEL_SERVICE_ACCOUNT_USERNAME and "
        "MIXPANEL_SERVICE_ACCOUNT_SECRET (or their *_FILE variants)."
    )

    def __init__(self, detail: str | None = None) -> None:
        super().__init__()
        self.detail = detail or self.default_detail
        logger.error("%s", self.detail)


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
        """Sum of the numeric counts in exposures_cache when its shape allows, else None."""
        return exposures_total(self.exposures_cache)


@dataclass(frozen=True, slots=True)
class VariantSummary:
    """One variant as the list keeps it: its key, planned split and exposures (each None when unknown)."""

    key: str
    split: float | None
    exposures: int | None


@dataclass(frozen=True, slots=True)
class ExperimentSummary:
    """What the experiments list keeps of one experiment: a few hundred bytes instead of the whole object.

    The list page, its search and its sorts need only these fields; the experiment page
    reads the experiment itself. Per variant, key, planned split and exposures are kept
    so that list-wide checks of the split need no second read. `sample_ratio_mismatch`
    is the experiment page's split check, run once when the list is read: True when
    exposures do not follow the planned split, False when they do, None when it cannot
    be checked (experiment_shapes.sample_ratio_check says why).
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

    @property
    def is_active(self) -> bool:
        return self.status == "active"

    @property
    def is_concluded(self) -> bool:
        return self.status in CONCLUDED_STATUSES

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

    Read by the experiment page's own rule (experiments.experiment_shapes), so the list
    and the page never disagree about a variant.
    """
    # Imported here: experiment_shapes reads dates with this module's parser.
    from experiments.experiment_shapes import variant_table

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


def _when(value: Any) -> dt.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return parse_iso_datetime(value)
    except ValueError:
        return None


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
    # Imported here: experiment_shapes reads dates with this module's parser.
    from experiments.experiment_shapes import sample_ratio_check, variant_table

    tags = data.get("tags")
    cache = data.get("exposures_cache")
    # One variant table serves both the variants kept and the split check, by the page's rules.
    table = variant_table(data.get("variants"), cache)
    variants = tuple(one(VariantSummary(one(v.key), v.split, v.exposures)) for v in _listed_variants(table))
    split_test, _ = sample_ratio_check(table)
    return ExperimentSummary(
        id=exp_id,
        name=_text(data.get("name")) or "",
        status=one(status),
        created=_when(data.get("created")),
        start_date=_when(data.get("start_date")),
        end_date=_when(data.get("end_date")),
        deleted=_when(data.get("deleted")),
        creator_name=one(_text(data.get("creator_name"))),
        creator_email=one(_text(data.get("creator_email"))),
        hypothesis=_text(data.get("hypothesis")),
        last_modified_by_name=one(_text(data.get("last_modified_by_name"))),
        tags=one(tuple(one(str(t)) for t in tags)) if isinstance(tags, list) else (),
        variants=one(variants),
        exposures_total=exposures_total(cache),
        sample_ratio_mismatch=split_test.mismatch if split_test is not None else None,
    )


def format_end_date(value: dt.datetime) -> str:
    """The one place that decides how end_date is sent: ISO 8601, UTC, explicit Z."""
    # isoformat, not strftime: %Y does not pad years before 1000 on every platform.
    return value.astimezone(dt.UTC).replace(microsecond=0, tzinfo=None).isoformat() + "Z"


# --- The client ------------------------------------------------------------------
logger = logging.getLogger(__name__)

REGION_BASE_URLS = {
    "us": "https://mixpanel.com/api/app",
    "eu": "https://eu.mixpanel.com/api/app",
    "in": "https://in.mixpanel.com/api/app",
}
ENV_USERNAME = "MIXPANEL_SERVICE_ACCOUNT_USERNAME"
ENV_SECRET = "MIXPANEL_SERVICE_ACCOUNT_SECRET"  # noqa: S105 - the variable's name, not a secret

# Plain http is only acceptable where the Authorization header cannot cross a network.
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
BODY_EXCERPT_CHARS = 2000
RAW_BODY_CHARS = 64 * 1024
_READ_SIZE = 64 * 1024
# A streamed list keeps this much of its beginning: the envelope ("status") and an excerpt for errors.
_HEAD_BYTES = 64 * 1024
# Waits before retrying a read that gave no Retry-After: exponential from the first, each
# drawn at random below its bound ("full jitter") so many processes do not retry in step;
# never above MIXPANEL_RETRY_AFTER_CAP.
_BACKOFF_FIRST_SECONDS = 0.25
# Same-origin redirects a read follows before giving up (a trailing-slash hop needs one).
_MAX_REDIRECTS = 3
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})

# No automatic retries inside urllib3, ever: retries are decided here, per call,
# and the force-conclude PUT gets none. read=False makes urllib3 re-raise read
# errors as they are (requests then reports ReadTimeout rather than a generic
# ConnectionError), so we can tell "connection never made" from "request sent".
_NO_RETRY = Retry(total=0, read=False, redirect=False, raise_on_status=False)

# Readable messages (constants so tests and callers can match them).
MSG_REDIRECT = "Mixpanel answered with a redirect (HTTP {status}); a change is never sent on to another address."
MSG_REDIRECT_AWAY = (
    "Mixpanel redirected a read to another address (HTTP {status}); only same-origin redirects are followed."
)
MSG_REDIRECT_LOOP = "Mixpanel redirected a read more than {limit} times; gave up."
MSG_BAD_ID = "Mixpanel returned an experiment whose id holds control characters ({id}); it cannot be used."
MSG_LIST_NO_STATUS = (
    'Mixpanel answered HTTP 200 with a list whose envelope does not say "status": "ok" before its results.'
)
MSG_NOT_JSON = "Mixpanel answered HTTP {status} with a body that is not JSON."
MSG_BAD_SHAPE = "Mixpanel answered HTTP {status} with JSON of an unexpected shape."
MSG_STATUS_ERROR = "Mixpanel answered HTTP 200 but reported an error: {detail}"
MSG_TOO_LARGE = "Mixpanel's answer was larger than the {limit} bytes we accept (setting {setting})."
MSG_UNAUTHORIZED = (
    "Mixpanel did not accept this dashboard's service account (HTTP 401): its credentials are invalid or "
    "expired. Ask the dashboard's operators to renew them."
)
# People see the message above; the variables to fix are for operators, in the log.
LOG_UNAUTHORIZED = (
    "Mixpanel answered 401 to service account %r: check MIXPANEL_SERVICE_ACCOUNT_USERNAME and "
    "MIXPANEL_SERVICE_ACCOUNT_SECRET (or their _FILE variants)."
)
MSG_FORBIDDEN = (
    "The service account has no access to this workspace in Mixpanel (HTTP 403). "
    "An operator must grant it a role on the workspace or project."
)
MSG_NOT_FOUND = "Mixpanel has no such experiment or workspace (HTTP 404)."
MSG_RATE_LIMITED = "Mixpanel is rate limiting us (HTTP 429). Try again in {wait}."
MSG_REJECTED = "Mixpanel rejected the request (HTTP {status}): {detail}"
# Advice for reads and for writes that surely never arrived. After a write was sent,
# trying again is the wrong advice, so unknown outcomes state the fact without it.
RETRY_ADVICE = " Try again later."
MSG_SERVER_ERROR = "Mixpanel had a server error (HTTP {status})." + RETRY_ADVICE
MSG_REFUSED = "Mixpanel could not be reached (no connection could be made). Nothing was sent." + RETRY_ADVICE
MSG_TIMEOUT = "Mixpanel did not answer in time." + RETRY_ADVICE
MSG_CONNECTION_LOST = "The connection to Mixpanel broke before a full answer arrived." + RETRY_ADVICE
MSG_UNKNOWN_PREFIX = "We do not know whether Mixpanel applied the change: "
MSG_ECHOED_CREDENTIALS = "[redacted: Mixpanel's answer echoed our credentials in an encoded form]"


def _unknown_message(fact: str) -> str:
    """A failure after a write was sent: the fact, without advice to send it again."""
    return MSG_UNKNOWN_PREFIX + fact.removesuffix(RETRY_ADVICE)


class _Transport(Exception):
    """Internal: a transport failure; `sent` says whether request bytes may have left."""

    def __init__(self, message: str, *, sent: bool) -> None:
        super().__init__(message)
        self.message = message
        self.sent = sent


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    headers: Mapping[str, str]
    body: bytes
    duration_ms: int
    streamed: Any = None  # what a streamed body was parsed into


def _setting(name: str) -> Any:
    # Read at call time, not import time, so override_settings and the environment apply.
    from django.conf import settings

    return getattr(settings, name)


def read_deadline_seconds() -> float:
    """The longest one read (retries and their waits included) may take, in seconds."""
    return float(_setting("MIXPANEL_DEADLINE"))


def write_deadline_seconds() -> float:
    """The longest a state-changing call (the force-conclude PUT) may take, in seconds.

    MIXPANEL_WRITE_DEADLINE: longer than a read's, because Mixpanel's edge gives App API
    calls about 120 s and a write cut off sooner may still be applied. Reconciling waits
    this long (plus a margin) before it judges an attempt, so it never reads an
    experiment while our own PUT may still be on its way.
    """
    return float(_setting("MIXPANEL_WRITE_DEADLINE"))


def _user_agent() -> str:
    from dashboard import __version__

    return f"ExperimentDesk/{__version__}"


def _read_env(name: str) -> str:
    """One credential from NAME or NAME_FILE (a mounted secret). Empty string if neither."""
    value = os.environ.get(name, "")
    file_name = os.environ.get(name + "_FILE", "")
    if value and file_name:
        raise MixpanelConfigError(f"Mixpanel is misconfigured: set {name} or {name}_FILE, not both.")
    if file_name:
        try:
            with open(file_name, encoding="utf-8") as handle:
                # Mounted secrets usually end with a newline that is not part of the value.
                return handle.read().strip()
        except OSError as exc:
            raise MixpanelConfigError(
                f"Mixpanel is misconfigured: the file named by {name}_FILE cannot be read ({exc.strerror})."
            ) from None
    return value.strip()


def read_credentials() -> tuple[str, str]:
    """The service account (username, secret) from the environment, read now.

    Raises MixpanelConfigError naming the variables when either is missing.
    """
    username = _read_env(ENV_USERNAME)
    secret = _read_env(ENV_SECRET)
    if not username or not secret:
        raise MixpanelConfigError()
    return username, secret


def _base_url_for(region: str, override: str | None) -> str:
    if region not in REGION_BASE_URLS:
        raise MixpanelConfigError(f"Unknown Mixpanel region {region!r}; expected one of us, eu, in.")
    base = (override or "").strip() or REGION_BASE_URLS[region]
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise MixpanelConfigError("MIXPANEL_API_BASE_URL must be an http(s) URL such as https://mixpanel.com/api/app.")
    if parts.scheme == "http" and parts.hostname not in _LOOPBACK_HOSTS:
        raise MixpanelConfigError(
            "MIXPANEL_API_BASE_URL must use https: plain http is only allowed for 127.0.0.1 or localhost, "
            "so the service account never crosses a network in clear text."
        )
    if parts.query or parts.fragment or parts.username or parts.password:
        raise MixpanelConfigError("MIXPANEL_API_BASE_URL must be a plain base URL (no credentials, query or fragment).")
    return base.rstrip("/")


def _parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (seconds or HTTP date); None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        seconds = (when - dt.datetime.now(dt.UTC)).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


def _describe_wait(seconds: float | None) -> str:
    if seconds is None:
        return "a minute"
    if seconds < 1.5:
        return "a second"
    if seconds < 90:
        return f"{round(seconds)} seconds"
    return f"{round(seconds / 60)} minutes"


def _error_detail(payload: Any) -> str:
    """Mixpanel's own error text from {"status": "error", "error": str|object, "type": ...}."""
    if not isinstance(payload, Mapping):
        return ""
    error = payload.get("error")
    if isinstance(error, str):
        detail = error
    elif error is not None:
        detail = json.dumps(error, ensure_ascii=False, sort_keys=True)[:500]
    else:
        detail = ""
    kind = payload.get("type")
    if isinstance(kind, str) and kind:
        detail = f"{kind}: {detail}" if detail else kind
    return " ".join(detail.split())[:500]


def _connect_failure(exc: requests.exceptions.RequestException) -> bool:
    """True when no connection was made at all, so not one byte of the request left.

    requests wraps urllib3's MaxRetryError, whose `reason` is the real cause.
    NewConnectionError covers refused connections and DNS failures; a TLS error
    can only happen in the handshake, before the request is written.
    """
    if isinstance(exc, (requests.exceptions.ConnectTimeout, requests.exceptions.SSLError)):
        return True
    if isinstance(exc, requests.exceptions.ProxyError):
        return True
    cause: Any = exc.args[0] if exc.args else None
    reason = getattr(cause, "reason", cause)
    return isinstance(reason, NewConnectionError)


class _NoRedirectSession(requests.Session):
    """A Session that never looks at Location.

    Even with allow_redirects=False, requests works out the next request of a 3xx
    for `response.next`, and reads the whole body to do it, bypassing our size
    cap and deadline. Saying "no redirect target" skips all of that.
    """

    def get_redirect_target(self, resp: requests.Response) -> None:
        return None


class _Body:
    """An answer's body as a file object whose every read keeps the call's deadline and size cap.

    read() returns what one socket read produced, so a server that trickles bytes
    cannot keep us past the deadline (iter_content and read(n) block until n bytes
    arrive). The first _HEAD_BYTES are kept in `head` for the envelope and excerpts.
    """

    def __init__(
        self,
        client: MixpanelClient,
        response: Any,
        *,
        deadline: float,
        read_timeout: float | None,
        limit: int,
        setting: str,
    ) -> None:
        self._client = client
        self._raw = response.raw
        self._status = response.status_code
        self._deadline = deadline
        self._read_timeout = read_timeout
        self.limit = limit
        self._setting = setting
        self.size = 0
        self.head = b""

    def read(self, size: int = -1) -> bytes:
        if size == 0:
            return b""
        remaining = self._deadline - self._client._clock()
        if remaining <= 0:
            raise _Transport(MSG_TIMEOUT, sent=True)
        wait = remaining if self._read_timeout is None else min(self._read_timeout, remaining)
        self._client._bound_socket_wait(self._raw, wait)
        try:
            chunk = self._raw.read1(_READ_SIZE if size < 0 else min(size, _READ_SIZE), decode_content=True)
        except (urllib3.exceptions.HTTPError, OSError, requests.exceptions.RequestException) as exc:
            is_timeout = isinstance(exc, (urllib3.exceptions.TimeoutError, TimeoutError))
            raise _Transport(MSG_TIMEOUT if is_timeout else MSG_CONNECTION_LOST, sent=True) from None
        self.size += len(chunk)
        if self.size > self.limit:
            raise self.too_large()
        if len(self.head) < _HEAD_BYTES:
            self.head += chunk[: _HEAD_BYTES - len(self.head)]
        return chunk

    def too_large(self) -> MixpanelBadResponse:
        return MixpanelBadResponse(
            MSG_TOO_LARGE.format(limit=self.limit, setting=self._setting), http_status=self._status
        )


def _origin(url: str) -> tuple[str, str, int | None, bool]:
    """Scheme, host and port of a URL (default ports made explicit), and whether it carries credentials."""
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), port, bool(parts.username or parts.password)


def _stream_list(body: _Body, client: MixpanelClient) -> tuple[list[ExperimentSummary], int, Any]:
    """Summaries of a list body's experiments as they arrive, the count skipped, and its envelope.

    The envelope is the body's top level without the experiments: the whole body when it
    fits in `head`, else what `head` says before the results begin. A large body must say
    "status" before its results (as Mixpanel's do); its end is never held to look there.
    """
    summaries: list[ExperimentSummary] = []
    skipped = 0
    shared: dict[Any, Any] = {}
    try:
        for item in ijson.items(body, "results.item", use_float=True):
            try:
                summaries.append(summarize_experiment(item, shared))
            except MixpanelBadResponse as exc:
                skipped += 1
                logger.warning("Mixpanel list: skipped an experiment: %s", exc.message)
    except ijson.JSONError:
        return [], 0, _NOT_JSON
    if body.size <= _HEAD_BYTES:
        try:
            return summaries, skipped, json.loads(body.head)
        except (ValueError, RecursionError):
            return [], 0, _NOT_JSON
    envelope: dict[str, Any] = {}
    # `head` breaks off mid-document, and the parser drops the events of the buffer in
    # which it meets the end: small buffers lose at most the head's last 64 bytes.
    with contextlib.suppress(ijson.JSONError):
        for prefix, event, value in ijson.parse(io.BytesIO(body.head), buf_size=64):
            if prefix == "status" and event == "string":
                envelope["status"] = value
            elif prefix == "results" and event == "start_array":
                envelope["results"] = []
                break
    if "status" not in envelope and "results" in envelope:
        return summaries, skipped, _NO_STATUS
    return summaries, skipped, envelope


class MixpanelClient:
    """A client per (region, service account), holding one requests.Session.

    Every call: Basic auth, User-Agent, explicit (connect, read) timeouts, a total
    deadline enforced while the body streams in, a response size cap, no
    redirects, and failures mapped to the MixpanelError family. Reads retry a
    bounded number of times; the force-conclude PUT never does.
    """

    def __init__(self, *, region: str, username: str, secret: str, base_url: str | None = None) -> None:
        if not username or not secret:
            raise MixpanelConfigError()
        self.region = region
        self.username = username
        self.base_url = _base_url_for(region, base_url if base_url is not None else _setting("MIXPANEL_API_BASE_URL"))
        # Kept only to scrub it from anything we echo and to notice a rotated secret.
        self.__secret = secret
        self._redact = _encoded_forms(username, secret)
        session = _NoRedirectSession()
        session.auth = HTTPBasicAuth(username, secret)
        session.headers.update({"User-Agent": _user_agent(), "Accept": "application/json"})
        session.max_redirects = 0
        adapter = HTTPAdapter(max_retries=_NO_RETRY)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        self._session = session
        # Tests replace these to run without real waiting or chance.
        self._sleep = time.sleep
        self._clock = time.monotonic
        self._random = random.random

    def __repr__(self) -> str:
        return f"<MixpanelClient region={self.region!r} base_url={self.base_url!r} username={self.username!r}>"

    def uses_secret(self, secret: str) -> bool:
        """Whether this client was built with `secret` (so a rotated secret builds a new client)."""
        return hmac.compare_digest(self.__secret.encode(), secret.encode())

    def close(self) -> None:
        """Close pooled connections."""
        self._session.close()

    # -- public calls ---------------------------------------------------------
    def list_experiments(self, workspace_id: int) -> list[ExperimentSummary]:
        """GET /workspaces/{id}/experiments: a summary of every experiment of a workspace.

        The body is parsed as it arrives (ijson), one experiment at a time, and each one
        is reduced to its ExperimentSummary at once: a 30 MB list is never held whole,
        neither as bytes nor parsed. MIXPANEL_MAX_LIST_BYTES bounds its size. Experiments
        without a usable id or status are skipped (and logged) rather than failing the
        whole list. Retries connection errors, 429 and 5xx, bounded.
        """
        path = f"/workspaces/{int(workspace_id)}/experiments"
        answer, streamed = self._read(path, stream=_stream_list)
        summaries, skipped, envelope = streamed
        if envelope is _NOT_JSON:
            raise self._bad(MSG_NOT_JSON.format(status=answer.status), answer)
        if envelope is _NO_STATUS:
            raise self._bad(MSG_LIST_NO_STATUS, answer)
        if not isinstance(envelope, Mapping):
            raise self._bad(MSG_BAD_SHAPE.format(status=answer.status), answer)
        if envelope.get("status") == "error":
            detail = self._scrub(_error_detail(envelope)) or "no details"
            raise self._bad(MSG_STATUS_ERROR.format(detail=detail), answer)
        if envelope.get("status") != "ok":
            raise self._bad(MSG_BAD_SHAPE.format(status=answer.status), answer)
        if not isinstance(envelope.get("results"), list):
            raise self._bad(MSG_BAD_SHAPE.format(status=answer.status), answer)
        if skipped:
            logger.warning("Mixpanel list of workspace %s: skipped %d unusable experiment(s)", workspace_id, skipped)
        return summaries

    def get_experiment(self, workspace_id: int, experiment_id: str) -> Experiment:
        """GET /workspaces/{id}/experiments/{experiment_id}: one experiment, parsed.

        Retries connection errors, 429 and 5xx, bounded.
        """
        path = f"/workspaces/{int(workspace_id)}/experiments/{quote(str(experiment_id), safe='')}"
        answer, payload = self._read(path)
        try:
            return parse_experiment(payload.get("results"))
        except MixpanelBadResponse as exc:
            raise self._bad(f"{MSG_BAD_SHAPE.format(status=answer.status)} {exc.message}", answer) from None

    def force_conclude(self, workspace_id: int, experiment_id: str, *, end_date: dt.datetime) -> ConcludeResult:
        """PUT .../force_conclude with {"end_date": ...}; sent at most once, never retried.

        It has write_deadline_seconds() to answer and never follows a redirect. Definite
        failures raise MixpanelUnavailable (nothing was sent), RateLimited, AuthError,
        NotFound or Rejected; anything that leaves the outcome open after the request may
        have been sent (timeout, reset, 5xx, unreadable 200) raises MixpanelOutcomeUnknown.
        Whether the experiment is really concluded is for the caller to judge.
        """
        path = f"/workspaces/{int(workspace_id)}/experiments/{quote(str(experiment_id), safe='')}/force_conclude"
        return self._write_once("PUT", path, {"end_date": format_end_date(end_date)})

    def decide(
        self, workspace_id: int, experiment_id: str, *, success: bool, variant: str, message: str
    ) -> ConcludeResult:
        """PATCH .../decide with {"success", "variant", "message"}; sent at most once, never retried.

        Answered like force_conclude, with the same deadline, the same refusal to
        follow a redirect and the same exception families (definite failures versus
        MixpanelOutcomeUnknown). Whether the returned experiment is really decided
        (success or fail) is for the caller to judge.
        """
        path = f"/workspaces/{int(workspace_id)}/experiments/{quote(str(experiment_id), safe='')}/decide"
        return self._write_once("PATCH", path, {"success": bool(success), "variant": variant, "message": message})

    def _write_once(self, method: str, path: str, body: dict[str, Any]) -> ConcludeResult:
        """Send one write, once, and sort its answer into a result or an exception family."""
        started = self._clock()
        deadline = started + write_deadline_seconds()
        try:
            # No shorter wait between bytes: cutting a write off early only makes its outcome unknown.
            answer = self._send(
                method, self.base_url + path, body, deadline=deadline, started=started, read_timeout=None
            )
        except _Transport as exc:
            elapsed = self._ms_since(started)
            if exc.sent:
                raise MixpanelOutcomeUnknown(_unknown_message(exc.message), duration_ms=elapsed) from None
            raise MixpanelUnavailable(exc.message, duration_ms=elapsed) from None
        except MixpanelBadResponse as exc:  # too large: the write was sent and read in part
            raise MixpanelOutcomeUnknown(
                _unknown_message(exc.message), http_status=exc.http_status, duration_ms=exc.duration_ms
            ) from None

        if answer.status == 200:
            payload = self._json(answer)
            if isinstance(payload, Mapping) and payload.get("status") == "error":
                # An explicit refusal carried by a 200: definite, nothing was applied.
                raise MixpanelRejected(
                    MSG_STATUS_ERROR.format(detail=self._scrub(_error_detail(payload)) or "no details"),
                    **self._facts(answer),
                )
            experiment = None
            if isinstance(payload, Mapping) and payload.get("status") == "ok":
                try:
                    experiment = parse_experiment(payload.get("results"))
                except MixpanelBadResponse:
                    experiment = None
            if experiment is None:
                reason = MSG_NOT_JSON if payload is _NOT_JSON else MSG_BAD_SHAPE
                raise MixpanelOutcomeUnknown(_unknown_message(reason.format(status=200)), **self._facts(answer))
            text = self._scrub(answer.body.decode("utf-8", errors="replace"))
            return ConcludeResult(
                experiment=experiment,
                http_status=200,
                duration_ms=answer.duration_ms,
                raw_body=text[:RAW_BODY_CHARS],
                truncated=len(text) > RAW_BODY_CHARS,
            )
        if answer.status >= 500 or 200 <= answer.status < 300:
            # A server error or an unexpected 2xx after the write arrived: it may have been applied.
            reason = MSG_SERVER_ERROR if answer.status >= 500 else MSG_BAD_SHAPE
            raise MixpanelOutcomeUnknown(_unknown_message(reason.format(status=answer.status)), **self._facts(answer))
        raise self._definite_error(answer)

    # -- internals ------------------------------------------------------------
    def _read(self, path: str, *, stream: Any = None) -> tuple[_Answer, Any]:
        """GET with bounded retries and same-origin redirects.

        Returns the answer and its "ok" JSON object; with `stream`, a 200's body is
        handed to stream(body, client) as it arrives and its result is returned instead.
        """
        started = self._clock()
        deadline = started + read_deadline_seconds()
        retries = max(0, int(_setting("MIXPANEL_READ_RETRIES")))
        cap = max(0.0, float(_setting("MIXPANEL_RETRY_AFTER_CAP")))
        read_timeout = float(_setting("MIXPANEL_READ_TIMEOUT"))
        url = self.base_url + path
        attempt = redirects = 0
        while True:
            error: MixpanelError
            wait: float
            try:
                answer = self._send(
                    "GET", url, None, deadline=deadline, started=started, read_timeout=read_timeout, stream=stream
                )
            except _Transport as exc:
                error = MixpanelUnavailable(exc.message, duration_ms=self._ms_since(started))
                wait = self._backoff(attempt, cap)
            else:
                if answer.status in _REDIRECT_STATUSES:
                    url = self._redirect_target(url, answer, redirects)
                    redirects += 1
                    continue
                if answer.status == 200:
                    return answer, answer.streamed if stream is not None else self._ok_payload(answer)
                error = self._definite_error(answer)
                if not isinstance(error, (MixpanelUnavailable, MixpanelRateLimited)):
                    raise error
                if error.retry_after is not None and error.retry_after > cap:
                    # Mixpanel asked for a longer wait than a page view can afford: say so now.
                    raise error
                wait = error.retry_after if error.retry_after is not None else self._backoff(attempt, cap)
            attempt += 1
            remaining = deadline - self._clock()
            # Never sleep past the call's deadline: give up with the last error instead.
            if attempt > retries or wait >= remaining:
                error.duration_ms = self._ms_since(started)
                raise error
            logger.info("Mixpanel GET %s: retrying in %.2fs after: %s", path, wait, error.message)
            self._sleep(wait)

    def _ok_payload(self, answer: _Answer) -> Mapping[str, Any]:
        """The JSON object of a 200 that says "ok"; MixpanelBadResponse for anything else."""
        payload = self._json(answer)
        if payload is _NOT_JSON:
            raise self._bad(MSG_NOT_JSON.format(status=200), answer)
        if not isinstance(payload, Mapping):
            raise self._bad(MSG_BAD_SHAPE.format(status=200), answer)
        if payload.get("status") == "error":
            detail = self._scrub(_error_detail(payload)) or "no details"
            raise self._bad(MSG_STATUS_ERROR.format(detail=detail), answer)
        if payload.get("status") != "ok":
            raise self._bad(MSG_BAD_SHAPE.format(status=200), answer)
        return payload

    def _backoff(self, attempt: int, cap: float) -> float:
        """Seconds before retry number attempt+1: doubling from the first, between half and all of it."""
        bound = min(cap, _BACKOFF_FIRST_SECONDS * 2**attempt)
        return bound / 2 + self._random() * bound / 2

    def _redirect_target(self, url: str, answer: _Answer, redirects: int) -> str:
        """Where a read's redirect points, if it stays on Mixpanel's origin; else MixpanelBadResponse.

        Mixpanel's own client asks for collections with a trailing slash, so a server
        may redirect between the two forms. Another origin would receive our credentials.
        """
        target = urljoin(url, (answer.headers.get("Location") or "").strip())
        if not answer.headers.get("Location") or _origin(target) != _origin(self.base_url):
            raise self._bad(MSG_REDIRECT_AWAY.format(status=answer.status), answer)
        if redirects >= _MAX_REDIRECTS:
            raise self._bad(MSG_REDIRECT_LOOP.format(limit=_MAX_REDIRECTS), answer)
        return target.split("#", 1)[0]

    def _send(
        self,
        method: str,
        url: str,
        body: Any,
        *,
        deadline: float,
        started: float,
        read_timeout: float | None,
        stream: Any = None,
    ) -> _Answer:
        """One HTTP exchange, the body read under the deadline and the size cap.

        `read_timeout` bounds each wait for bytes (None: whatever is left of the deadline).
        With `stream`, a 200's body goes to stream(body, client) instead of memory.
        """
        path = urlsplit(url).path
        remaining = deadline - self._clock()
        if remaining <= 0:
            raise _Transport(MSG_TIMEOUT, sent=False)
        connect_timeout = min(float(_setting("MIXPANEL_CONNECT_TIMEOUT")), remaining)
        per_read = remaining if read_timeout is None else min(read_timeout, remaining)
        try:
            response = self._session.request(
                method, url, json=body, timeout=(connect_timeout, per_read), allow_redirects=False, stream=True
            )
        except requests.exceptions.RequestException as exc:
            sent = not _connect_failure(exc)
            if not sent:
                message = MSG_REFUSED
            elif isinstance(exc, requests.exceptions.Timeout):
                message = MSG_TIMEOUT
            else:
                message = MSG_CONNECTION_LOST
            logger.warning("Mixpanel %s %s failed after %d ms: %s", method, path, self._ms_since(started), message)
            raise _Transport(message, sent=sent) from None

        try:
            data, streamed = self._receive(response, deadline=deadline, read_timeout=read_timeout, stream=stream)
        except _Transport as exc:
            logger.warning("Mixpanel %s %s failed after %d ms: %s", method, path, self._ms_since(started), exc.message)
            raise
        finally:
            response.close()
        answer = _Answer(
            status=response.status_code,
            headers=response.headers,
            body=data,
            duration_ms=self._ms_since(started),
            streamed=streamed,
        )
        logger.debug("Mixpanel %s %s -> %d in %d ms", method, path, answer.status, answer.duration_ms)
        return answer

    def _receive(self, response: Any, *, deadline: float, read_timeout: float | None, stream: Any) -> tuple[bytes, Any]:
        """The body (or, streamed, its head) and what `stream` made of it, under the cap that applies."""
        streaming = stream is not None and response.status_code == 200
        setting = "MIXPANEL_MAX_LIST_BYTES" if streaming else "MIXPANEL_MAX_RESPONSE_BYTES"
        limit = int(_setting(setting))
        reader = _Body(self, response, deadline=deadline, read_timeout=read_timeout, limit=limit, setting=setting)
        try:
            declared = int(response.headers.get("Content-Length", "0") or 0)
        except ValueError:
            declared = 0
        if declared > limit:
            raise reader.too_large()
        if streaming:
            streamed = stream(reader, self)
            return reader.head, streamed
        return b"".join(iter(reader.read, b"")), None

    @staticmethod
    def _bound_socket_wait(raw: Any, seconds: float) -> None:
        # The read timeout applies per socket read; shrink it to what is left of the
        # deadline so a stalled body is cut off on time. Best effort: mocked
        # responses have no socket.
        sock = getattr(getattr(raw, "connection", None), "sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.settimeout(max(seconds, 0.001))

    def _definite_error(self, answer: _Answer) -> MixpanelError:
        """The exception for a non-200 answer that Mixpanel (or a proxy) gave on purpose."""
        status = answer.status
        facts = self._facts(answer)
        if 300 <= status < 400:
            return MixpanelBadResponse(MSG_REDIRECT.format(status=status), **facts)
        if status == 401:
            logger.error(LOG_UNAUTHORIZED, self.username)
            return MixpanelAuthError(MSG_UNAUTHORIZED, **facts)
        if status == 403:
            return MixpanelAuthError(MSG_FORBIDDEN, **facts)
        if status == 404:
            return MixpanelNotFound(MSG_NOT_FOUND, **facts)
        if status == 429:
            wait = _parse_retry_after(answer.headers.get("Retry-After"))
            return MixpanelRateLimited(MSG_RATE_LIMITED.format(wait=_describe_wait(wait)), retry_after=wait, **facts)
        if status >= 500:
            # 503 often carries Retry-After too; reads honour it like a 429's.
            wait = _parse_retry_after(answer.headers.get("Retry-After"))
            return MixpanelUnavailable(MSG_SERVER_ERROR.format(status=status), retry_after=wait, **facts)
        if 400 <= status < 500:
            payload = self._json(answer)
            detail = self._scrub(_error_detail(payload)) or "no details given"
            return MixpanelRejected(MSG_REJECTED.format(status=status, detail=detail), **facts)
        return self._bad(MSG_BAD_SHAPE.format(status=status), answer)

    def _bad(self, message: str, answer: _Answer) -> MixpanelBadResponse:
        return MixpanelBadResponse(message, **self._facts(answer))

    def _facts(self, answer: _Answer) -> dict[str, Any]:
        excerpt = self._scrub(answer.body[: BODY_EXCERPT_CHARS * 4].decode("utf-8", errors="replace"))
        return {
            "http_status": answer.status,
            "body_excerpt": excerpt[:BODY_EXCERPT_CHARS],
            "duration_ms": answer.duration_ms,
        }

    @staticmethod
    def _json(answer: _Answer) -> Any:
        try:
            return json.loads(answer.body)
        except (ValueError, RecursionError):
            return _NOT_JSON

    def _scrub(self, text: str) -> str:
        # Defence in depth: should anything ever echo our credentials back, they stop here,
        # also encoded. The usual encodings are cut out; if the secret still shows once
        # percent-escapes and HTML entities are undone (every character escaped, say),
        # none of the text is kept.
        for form in self._redact:
            if form in text:
                text = text.replace(form, "[redacted]")
        decoded = (html.unescape(unquote_plus(text)), unquote_plus(html.unescape(text)))
        if any(self.__secret in variant for variant in decoded):
            return MSG_ECHOED_CREDENTIALS
        return text

    def _ms_since(self, started: float) -> int:
        return max(0, round((self._clock() - started) * 1000))


def _encoded_forms(username: str, secret: str) -> tuple[str, ...]:
    """The credentials as an answer could echo them: plain, percent-encoded, HTML-escaped, base64."""
    raw = secret.encode()
    forms = {
        secret,
        quote(secret, safe=""),
        quote_plus(secret),
        html.escape(secret),
        # Without padding, so the form is found inside padded and unpadded text alike.
        base64.b64encode(raw).decode("ascii").rstrip("="),
        base64.urlsafe_b64encode(raw).decode("ascii").rstrip("="),
        base64.b64encode(f"{username}:{secret}".encode()).decode("ascii").rstrip("="),
    }
    # Longest first: a shorter form inside a longer one must not leave the rest behind.
    return tuple(sorted((form for form in forms if form), key=len, reverse=True))


_NOT_JSON: Any = object()
_NO_STATUS: Any = object()
_clients = threading.local()


def client_for(workspace: Any) -> MixpanelClient:
    """The seam: the client for a workspace's region with the configured account.

    Views and commands call this; tests replace it (or point MIXPANEL_API_BASE_URL
    at the stand-in). Credentials are read from the environment here, per call, so
    a rotated secret is picked up; a client (and its pooled connections) is reused
    per thread for the same region, base URL and account.
    """
    username, secret = read_credentials()
    region = str(getattr(workspace, "region", "us"))
    base_url = _base_url_for(region, _setting("MIXPANEL_API_BASE_URL"))
    cache: dict[tuple[str, str, str], MixpanelClient] = _clients.__dict__.setdefault("by_key", {})
    key = (region, base_url, username)
    client = cache.get(key)
    if client is None or not client.uses_secret(secret):
        if client is not None:
            client.close()
        client = MixpanelClient(region=region, username=username, secret=secret, base_url=base_url)
        cache[key] = client
    return client


def reset_clients() -> None:
    """Forget this thread's cached clients (tests; after changing credentials)."""
    for client in _clients.__dict__.pop("by_key", {}).values():
        client.close()
