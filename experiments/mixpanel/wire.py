"""What crosses the connection to Mixpanel: bodies read under a deadline and a size cap,
the experiment list parsed as it streams in, and answers that are not what we asked for.

The client (experiments.mixpanel.client) drives these; nothing here opens a connection.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import email.utils
import functools
import html
import io
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, quote_plus, urlsplit

import ijson
import requests
import urllib3
from urllib3.exceptions import NewConnectionError

from experiments import metrics
from experiments.mixpanel.errors import MixpanelBadResponse, MixpanelError, MixpanelRateLimited
from experiments.mixpanel.experiment import ExperimentSummary, summarize_experiment

logger = logging.getLogger("experiments.mixpanel")

BODY_EXCERPT_CHARS = 2000
RAW_BODY_CHARS = 64 * 1024
READ_SIZE = 64 * 1024
# A streamed list keeps this much of its beginning: the envelope ("status") and an excerpt for errors.
HEAD_BYTES = 64 * 1024

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})

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


def unknown_message(fact: str) -> str:
    """A failure after a write was sent: the fact, without advice to send it again."""
    return MSG_UNKNOWN_PREFIX + fact.removesuffix(RETRY_ADVICE)


class TransportFailure(Exception):
    """Internal: a transport failure; `sent` says whether request bytes may have left."""

    def __init__(self, message: str, *, sent: bool) -> None:
        super().__init__(message)
        self.message = message
        self.sent = sent


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: Mapping[str, str]
    body: bytes
    duration_ms: int
    streamed: Any = None  # what a streamed body was parsed into
    size: int = 0  # bytes of body read


def parse_retry_after(value: str | None) -> float | None:
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


def describe_wait(seconds: float | None) -> str:
    if seconds is None:
        return "a minute"
    if seconds < 1.5:
        return "a second"
    if seconds < 90:
        return f"{round(seconds)} seconds"
    return f"{round(seconds / 60)} minutes"


def error_detail(payload: Any) -> str:
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


def connect_failure(exc: requests.exceptions.RequestException) -> bool:
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


class NoRedirectSession(requests.Session):
    """A Session that never looks at Location.

    Even with allow_redirects=False, requests works out the next request of a 3xx
    for `response.next`, and reads the whole body to do it, bypassing our size
    cap and deadline. Saying "no redirect target" skips all of that.
    """

    def get_redirect_target(self, resp: requests.Response) -> None:
        return None


class BodyReader:
    """An answer's body as a file object whose every read keeps the call's deadline and size cap.

    read() returns what one socket read produced, so a server that trickles bytes
    cannot keep us past the deadline (iter_content and read(n) block until n bytes
    arrive). The first HEAD_BYTES are kept in `head` for the envelope and excerpts.
    """

    def __init__(
        self,
        client: Any,
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
            raise TransportFailure(MSG_TIMEOUT, sent=True)
        wait = remaining if self._read_timeout is None else min(self._read_timeout, remaining)
        self._client._bound_socket_wait(self._raw, wait)
        try:
            chunk = self._raw.read1(READ_SIZE if size < 0 else min(size, READ_SIZE), decode_content=True)
        except (urllib3.exceptions.HTTPError, OSError, requests.exceptions.RequestException) as exc:
            is_timeout = isinstance(exc, (urllib3.exceptions.TimeoutError, TimeoutError))
            raise TransportFailure(MSG_TIMEOUT if is_timeout else MSG_CONNECTION_LOST, sent=True) from None
        self.size += len(chunk)
        if self.size > self.limit:
            raise self.too_large()
        if len(self.head) < HEAD_BYTES:
            self.head += chunk[: HEAD_BYTES - len(self.head)]
        return chunk

    def too_large(self) -> MixpanelBadResponse:
        return MixpanelBadResponse(
            MSG_TOO_LARGE.format(limit=self.limit, setting=self._setting), http_status=self._status
        )


def origin_of(url: str) -> tuple[str, str, int | None, bool]:
    """Scheme, host and port of a URL (default ports made explicit), and whether it carries credentials."""
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), port, bool(parts.username or parts.password)


def stream_list(body: BodyReader, client: Any) -> tuple[list[ExperimentSummary], int, Any]:
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
        return [], 0, NOT_JSON
    if body.size <= HEAD_BYTES:
        try:
            return summaries, skipped, json.loads(body.head)
        except (ValueError, RecursionError):
            return [], 0, NOT_JSON
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
        return summaries, skipped, NO_STATUS
    return summaries, skipped, envelope


def encoded_forms(username: str, secret: str) -> tuple[str, ...]:
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


NOT_JSON: Any = object()
NO_STATUS: Any = object()


def call_outcome(exc: BaseException) -> str:
    """How a failed call to Mixpanel is counted: by the HTTP status Mixpanel gave, else a timeout, else unknown."""
    status = getattr(exc, "http_status", None)
    if isinstance(exc, MixpanelRateLimited) or status == 429:
        return metrics.RATE_LIMITED
    if status is not None and status >= 500:
        return metrics.SERVER_ERROR
    if status is not None and 400 <= status < 500:
        return metrics.CLIENT_ERROR
    if isinstance(exc, MixpanelError) and MSG_TIMEOUT.removesuffix(RETRY_ADVICE) in exc.message:
        return metrics.TIMEOUT
    return metrics.UNKNOWN


def counted(operation: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Count each call of a public method as one Mixpanel operation, with its outcome and time."""

    def wrap(method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
            started = time.monotonic()
            try:
                result = method(self, *args, **kwargs)
            except Exception as exc:
                seconds = time.monotonic() - started
                metrics.mixpanel_call_observed(operation=operation, outcome=call_outcome(exc), seconds=seconds)
                raise
            seconds = time.monotonic() - started
            metrics.mixpanel_call_observed(operation=operation, outcome=metrics.OK, seconds=seconds)
            return result

        return counted

    return wrap
