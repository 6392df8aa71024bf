"""The one module that speaks HTTP to Mixpanel's Experiments API.

A client per (region, service account) holds one requests.Session. Every call sends
Basic auth and our User-Agent, has explicit (connect, read) timeouts and a total deadline
kept while the body streams in, caps the answer's size, follows no redirect on a write,
and maps every failure to the MixpanelError family (experiments.mixpanel.errors). Reads
retry a bounded number of times; a state-changing call never does.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hmac
import html
import json
import logging
import random
import threading
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, unquote_plus, urljoin, urlsplit

import requests
from django.conf import settings
from requests.adapters import HTTPAdapter
from requests.auth import HTTPBasicAuth
from urllib3.util.retry import Retry

from experiments import __version__, metrics
from experiments.mixpanel import wire
from experiments.mixpanel.errors import (
    MixpanelAuthError,
    MixpanelBadResponse,
    MixpanelConfigError,
    MixpanelError,
    MixpanelNotFound,
    MixpanelOutcomeUnknown,
    MixpanelRateLimited,
    MixpanelRejected,
    MixpanelUnavailable,
)
from experiments.mixpanel.experiment import (
    ConcludeResult,
    Experiment,
    ExperimentSummary,
    format_end_date,
    parse_experiment,
)
from experiments.secrets import SecretConfigError, read_secret

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

# Waits before retrying a read that gave no Retry-After: exponential from the first, each
# drawn at random below its bound ("full jitter") so many processes do not retry in step;
# never above MIXPANEL_RETRY_AFTER_CAP.
_BACKOFF_FIRST_SECONDS = 0.25
# Same-origin redirects a read follows before giving up (a trailing-slash hop needs one).
_MAX_REDIRECTS = 3

# No automatic retries inside urllib3, ever: retries are decided here, per call,
# and the force-conclude PUT gets none. read=False makes urllib3 re-raise read
# errors as they are (requests then reports ReadTimeout rather than a generic
# ConnectionError), so we can tell "connection never made" from "request sent".
_NO_RETRY = Retry(total=0, read=False, redirect=False, raise_on_status=False)


def _setting(name: str) -> Any:
    # Read at call time, not import time, so override_settings and the environment apply.
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
    return f"ExperimentDesk/{__version__}"


def _read_env(name: str) -> str:
    """One credential from NAME or NAME_FILE (a mounted secret). Empty string if neither."""
    try:
        return read_secret(name)
    except SecretConfigError as exc:
        raise MixpanelConfigError(f"Mixpanel is misconfigured. {exc}") from None


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
        self._redact = wire.encoded_forms(username, secret)
        session = wire.NoRedirectSession()
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
    @wire.counted("list")
    def list_experiments(self, workspace_id: int) -> list[ExperimentSummary]:
        """GET /workspaces/{id}/experiments: a summary of every experiment of a workspace.

        The body is parsed as it arrives (ijson), one experiment at a time, and each one
        is reduced to its ExperimentSummary at once: a 30 MB list is never held whole,
        neither as bytes nor parsed. MIXPANEL_MAX_LIST_BYTES bounds its size. Experiments
        without a usable id or status are skipped (and logged) rather than failing the
        whole list. Retries connection errors, 429 and 5xx, bounded.
        """
        path = f"/workspaces/{int(workspace_id)}/experiments"
        answer, streamed = self._read(path, stream=wire.stream_list)
        metrics.mixpanel_list_bytes_total.inc(answer.size)
        summaries, skipped, envelope = streamed
        if envelope is wire.NOT_JSON:
            raise self._bad(wire.MSG_NOT_JSON.format(status=answer.status), answer)
        if envelope is wire.NO_STATUS:
            raise self._bad(wire.MSG_LIST_NO_STATUS, answer)
        if not isinstance(envelope, Mapping):
            raise self._bad(wire.MSG_BAD_SHAPE.format(status=answer.status), answer)
        if envelope.get("status") == "error":
            detail = self._scrub(wire.error_detail(envelope)) or "no details"
            raise self._bad(wire.MSG_STATUS_ERROR.format(detail=detail), answer)
        if envelope.get("status") != "ok":
            raise self._bad(wire.MSG_BAD_SHAPE.format(status=answer.status), answer)
        if not isinstance(envelope.get("results"), list):
            raise self._bad(wire.MSG_BAD_SHAPE.format(status=answer.status), answer)
        if skipped:
            logger.warning("Mixpanel list of workspace %s: skipped %d unusable experiment(s)", workspace_id, skipped)
        return summaries

    @wire.counted("get")
    def get_experiment(self, workspace_id: int, experiment_id: str) -> Experiment:
        """GET /workspaces/{id}/experiments/{experiment_id}: one experiment, parsed.

        Retries connection errors, 429 and 5xx, bounded.
        """
        path = f"/workspaces/{int(workspace_id)}/experiments/{quote(str(experiment_id), safe='')}"
        answer, payload = self._read(path)
        try:
            return parse_experiment(payload.get("results"))
        except MixpanelBadResponse as exc:
            raise self._bad(f"{wire.MSG_BAD_SHAPE.format(status=answer.status)} {exc.message}", answer) from None

    @wire.counted("force_conclude")
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

    @wire.counted("decide")
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
        except wire.TransportFailure as exc:
            elapsed = self._ms_since(started)
            if exc.sent:
                raise MixpanelOutcomeUnknown(wire.unknown_message(exc.message), duration_ms=elapsed) from None
            raise MixpanelUnavailable(exc.message, duration_ms=elapsed) from None
        except MixpanelBadResponse as exc:  # too large: the write was sent and read in part
            raise MixpanelOutcomeUnknown(
                wire.unknown_message(exc.message), http_status=exc.http_status, duration_ms=exc.duration_ms
            ) from None

        if answer.status == 200:
            payload = self._json(answer)
            if isinstance(payload, Mapping) and payload.get("status") == "error":
                # An explicit refusal carried by a 200: definite, nothing was applied.
                raise MixpanelRejected(
                    wire.MSG_STATUS_ERROR.format(detail=self._scrub(wire.error_detail(payload)) or "no details"),
                    **self._facts(answer),
                )
            experiment = None
            if isinstance(payload, Mapping) and payload.get("status") == "ok":
                try:
                    experiment = parse_experiment(payload.get("results"))
                except MixpanelBadResponse:
                    experiment = None
            if experiment is None:
                reason = wire.MSG_NOT_JSON if payload is wire.NOT_JSON else wire.MSG_BAD_SHAPE
                raise MixpanelOutcomeUnknown(wire.unknown_message(reason.format(status=200)), **self._facts(answer))
            text = self._scrub(answer.body.decode("utf-8", errors="replace"))
            return ConcludeResult(
                experiment=experiment,
                http_status=200,
                duration_ms=answer.duration_ms,
                raw_body=text[: wire.RAW_BODY_CHARS],
                truncated=len(text) > wire.RAW_BODY_CHARS,
            )
        if answer.status >= 500 or 200 <= answer.status < 300:
            # A server error or an unexpected 2xx after the write arrived: it may have been applied.
            reason = wire.MSG_SERVER_ERROR if answer.status >= 500 else wire.MSG_BAD_SHAPE
            raise MixpanelOutcomeUnknown(
                wire.unknown_message(reason.format(status=answer.status)), **self._facts(answer)
            )
        raise self._definite_error(answer)

    # -- internals ------------------------------------------------------------
    def _read(self, path: str, *, stream: Any = None) -> tuple[wire.Answer, Any]:
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
            except wire.TransportFailure as exc:
                error = MixpanelUnavailable(exc.message, duration_ms=self._ms_since(started))
                wait = self._backoff(attempt, cap)
            else:
                if answer.status in wire.REDIRECT_STATUSES:
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

    def _ok_payload(self, answer: wire.Answer) -> Mapping[str, Any]:
        """The JSON object of a 200 that says "ok"; MixpanelBadResponse for anything else."""
        payload = self._json(answer)
        if payload is wire.NOT_JSON:
            raise self._bad(wire.MSG_NOT_JSON.format(status=200), answer)
        if not isinstance(payload, Mapping):
            raise self._bad(wire.MSG_BAD_SHAPE.format(status=200), answer)
        if payload.get("status") == "error":
            detail = self._scrub(wire.error_detail(payload)) or "no details"
            raise self._bad(wire.MSG_STATUS_ERROR.format(detail=detail), answer)
        if payload.get("status") != "ok":
            raise self._bad(wire.MSG_BAD_SHAPE.format(status=200), answer)
        return payload

    def _backoff(self, attempt: int, cap: float) -> float:
        """Seconds before retry number attempt+1: doubling from the first, between half and all of it."""
        bound = min(cap, _BACKOFF_FIRST_SECONDS * 2**attempt)
        return bound / 2 + self._random() * bound / 2

    def _redirect_target(self, url: str, answer: wire.Answer, redirects: int) -> str:
        """Where a read's redirect points, if it stays on Mixpanel's origin; else MixpanelBadResponse.

        Mixpanel's own client asks for collections with a trailing slash, so a server
        may redirect between the two forms. Another origin would receive our credentials.
        """
        target = urljoin(url, (answer.headers.get("Location") or "").strip())
        if not answer.headers.get("Location") or wire.origin_of(target) != wire.origin_of(self.base_url):
            raise self._bad(wire.MSG_REDIRECT_AWAY.format(status=answer.status), answer)
        if redirects >= _MAX_REDIRECTS:
            raise self._bad(wire.MSG_REDIRECT_LOOP.format(limit=_MAX_REDIRECTS), answer)
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
    ) -> wire.Answer:
        """One HTTP exchange, the body read under the deadline and the size cap.

        `read_timeout` bounds each wait for bytes (None: whatever is left of the deadline).
        With `stream`, a 200's body goes to stream(body, client) instead of memory.
        """
        path = urlsplit(url).path
        remaining = deadline - self._clock()
        if remaining <= 0:
            raise wire.TransportFailure(wire.MSG_TIMEOUT, sent=False)
        connect_timeout = min(float(_setting("MIXPANEL_CONNECT_TIMEOUT")), remaining)
        per_read = remaining if read_timeout is None else min(read_timeout, remaining)
        try:
            response = self._session.request(
                method, url, json=body, timeout=(connect_timeout, per_read), allow_redirects=False, stream=True
            )
        except requests.exceptions.RequestException as exc:
            sent = not wire.connect_failure(exc)
            if not sent:
                message = wire.MSG_REFUSED
            elif isinstance(exc, requests.exceptions.Timeout):
                message = wire.MSG_TIMEOUT
            else:
                message = wire.MSG_CONNECTION_LOST
            logger.warning("Mixpanel %s %s failed after %d ms: %s", method, path, self._ms_since(started), message)
            raise wire.TransportFailure(message, sent=sent) from None

        try:
            data, streamed, size = self._receive(response, deadline=deadline, read_timeout=read_timeout, stream=stream)
        except wire.TransportFailure as exc:
            logger.warning("Mixpanel %s %s failed after %d ms: %s", method, path, self._ms_since(started), exc.message)
            raise
        finally:
            response.close()
        answer = wire.Answer(
            status=response.status_code,
            headers=response.headers,
            body=data,
            duration_ms=self._ms_since(started),
            streamed=streamed,
            size=size,
        )
        logger.debug("Mixpanel %s %s -> %d in %d ms", method, path, answer.status, answer.duration_ms)
        return answer

    def _receive(
        self, response: Any, *, deadline: float, read_timeout: float | None, stream: Any
    ) -> tuple[bytes, Any, int]:
        """The body (or, streamed, its head) and what `stream` made of it, under the cap that applies."""
        streaming = stream is not None and response.status_code == 200
        setting = "MIXPANEL_MAX_LIST_BYTES" if streaming else "MIXPANEL_MAX_RESPONSE_BYTES"
        limit = int(_setting(setting))
        reader = wire.BodyReader(
            self, response, deadline=deadline, read_timeout=read_timeout, limit=limit, setting=setting
        )
        try:
            declared = int(response.headers.get("Content-Length", "0") or 0)
        except ValueError:
            declared = 0
        if declared > limit:
            raise reader.too_large()
        if streaming:
            streamed = stream(reader, self)
            return reader.head, streamed, reader.size
        body = b"".join(iter(reader.read, b""))
        return body, None, len(body)

    @staticmethod
    def _bound_socket_wait(raw: Any, seconds: float) -> None:
        # The read timeout applies per socket read; shrink it to what is left of the
        # deadline so a stalled body is cut off on time. Best effort: mocked
        # responses have no socket.
        sock = getattr(getattr(raw, "connection", None), "sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.settimeout(max(seconds, 0.001))

    def _definite_error(self, answer: wire.Answer) -> MixpanelError:
        """The exception for a non-200 answer that Mixpanel (or a proxy) gave on purpose."""
        status = answer.status
        facts = self._facts(answer)
        if 300 <= status < 400:
            return MixpanelBadResponse(wire.MSG_REDIRECT.format(status=status), **facts)
        if status == 401:
            logger.error(wire.LOG_UNAUTHORIZED, self.username)
            return MixpanelAuthError(wire.MSG_UNAUTHORIZED, **facts)
        if status == 403:
            return MixpanelAuthError(wire.MSG_FORBIDDEN, **facts)
        if status == 404:
            return MixpanelNotFound(wire.MSG_NOT_FOUND, **facts)
        if status == 429:
            wait = wire.parse_retry_after(answer.headers.get("Retry-After"))
            return MixpanelRateLimited(
                wire.MSG_RATE_LIMITED.format(wait=wire.describe_wait(wait)), retry_after=wait, **facts
            )
        if status >= 500:
            # 503 often carries Retry-After too; reads honour it like a 429's.
            wait = wire.parse_retry_after(answer.headers.get("Retry-After"))
            return MixpanelUnavailable(wire.MSG_SERVER_ERROR.format(status=status), retry_after=wait, **facts)
        if 400 <= status < 500:
            payload = self._json(answer)
            detail = self._scrub(wire.error_detail(payload)) or "no details given"
            return MixpanelRejected(wire.MSG_REJECTED.format(status=status, detail=detail), **facts)
        return self._bad(wire.MSG_BAD_SHAPE.format(status=status), answer)

    def _bad(self, message: str, answer: wire.Answer) -> MixpanelBadResponse:
        return MixpanelBadResponse(message, **self._facts(answer))

    def _facts(self, answer: wire.Answer) -> dict[str, Any]:
        excerpt = self._scrub(answer.body[: wire.BODY_EXCERPT_CHARS * 4].decode("utf-8", errors="replace"))
        return {
            "http_status": answer.status,
            "body_excerpt": excerpt[: wire.BODY_EXCERPT_CHARS],
            "duration_ms": answer.duration_ms,
        }

    @staticmethod
    def _json(answer: wire.Answer) -> Any:
        try:
            return json.loads(answer.body)
        except (ValueError, RecursionError):
            return wire.NOT_JSON

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
            return wire.MSG_ECHOED_CREDENTIALS
        return text

    def _ms_since(self, started: float) -> int:
        return max(0, round((self._clock() - started) * 1000))


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
