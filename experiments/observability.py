"""Request ids and log context: one line per request, and who/where on every log line.

The middleware gives each request an id (the proxy's `X-Request-ID` when it looks
sane, else a new one), echoes it in the response and on error pages, and logs one
line per request with its status and duration. `RequestContextFilter` copies the
current request id, user, workspace, attempt and path onto every log record, so the
JSON formatter in production (see LOGGING in settings) writes them on each line.

Imported by the logging configuration while Django starts, so nothing here may
import models at module level.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from django.core.signals import request_finished
from django.http import HttpRequest, HttpResponse
from django.utils.functional import empty
from django.views.debug import SafeExceptionReporterFilter

from experiments import metrics

request_logger = logging.getLogger("dashboard.request")

REQUEST_ID_HEADER = "X-Request-ID"
# What we accept from a proxy: bounded, and only characters that cannot break a log
# line, a header or a page (no spaces, quotes, angle brackets or control characters).
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
# The fields every log line carries (None where not known).
CONTEXT_FIELDS = ("request_id", "user", "workspace", "attempt_id", "path")

_context: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("log_context", default={})  # noqa: B039


def sane_request_id(value: str | None) -> str:
    """The proxy's request id when it is sane, else a new random one."""
    if value and _SANE_REQUEST_ID.fullmatch(value):
        return value
    return uuid.uuid4().hex


def current_context() -> dict[str, Any]:
    """The log context in force (request id, user, workspace, attempt id, path)."""
    return _context.get()


def bind(**fields: Any) -> None:
    """Add fields to the current log context until the enclosing request or `log_context` ends."""
    _context.set({**_context.get(), **fields})


@contextlib.contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Log lines inside the block carry these fields (e.g. attempt_id in a background task)."""
    token = _context.set({**_context.get(), **fields})
    try:
        yield
    finally:
        _context.reset(token)


class RequestContextFilter(logging.Filter):
    """Puts the current log context on every record that passes through a handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = _context.get()
        for name in CONTEXT_FIELDS:
            if not hasattr(record, name):
                setattr(record, name, context.get(name))
        return True


def _username(request: HttpRequest, *, load: bool = False) -> str | None:
    # Unless told to load it, only a user the request has already loaded: looking one
    # up costs a session and a user query on requests that never needed them (probes).
    user = getattr(request, "user", None)
    if user is None or (not load and getattr(user, "_wrapped", None) is empty):
        return None
    return user.get_username() if user.is_authenticated else None


class RequestIdMiddleware:
    """Outermost middleware: request id in, request id out, one log line per request."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request_id = sane_request_id(request.META.get("HTTP_X_REQUEST_ID"))
        request.request_id = request_id
        # Not reset when this returns: Django logs a 4xx ("Not Found: ...") after the
        # middleware is done, and that line should carry the id too. The context is
        # cleared when the request finishes (_clear_context below).
        _context.set({"request_id": request_id, "path": request.path})
        started = time.monotonic()
        response = self.get_response(request)
        response[REQUEST_ID_HEADER] = request_id
        bind(user=_username(request))
        # For a streamed response (CSV export) this is the time to its first byte.
        seconds = time.monotonic() - started
        match = getattr(request, "resolver_match", None)
        metrics.request_observed(
            route=match.view_name if match is not None else "unmatched",
            method=request.method or "",
            status=response.status_code,
            seconds=seconds,
        )
        request_logger.info(
            "%s %s %s",
            request.method,
            request.path,
            response.status_code,
            extra={
                "method": request.method,
                "status": response.status_code,
                "duration_ms": round(seconds * 1000, 1),
            },
        )
        return response

    def process_view(
        self, request: HttpRequest, view_func: Callable[..., Any], view_args: Any, view_kwargs: dict[str, Any]
    ) -> None:
        # Every view that requires a login loads the user anyway (LoginRequiredMiddleware,
        # just after this): name it now, so the view's own lines carry it too.
        if getattr(view_func, "login_required", True) and hasattr(request, "user"):
            bind(user=_username(request, load=True))
        if "workspace_pk" in view_kwargs:
            bind(workspace=view_kwargs["workspace_pk"])
        match = request.resolver_match
        if match is not None and match.url_name == "audit-detail":
            bind(attempt_id=view_kwargs.get("pk"))


def _clear_context(**kwargs: Any) -> None:
    # A server thread serves one request after another: nothing of this one may
    # reach lines logged between requests or during the next one.
    _context.set({})


request_finished.connect(_clear_context, dispatch_uid="experiments.observability.clear_context")


# --- Error reports ----------------------------------------------------------------------------

# Shorter POST values are not looked for in other variables: "1" or "24" is everywhere.
_SECRET_MIN_LENGTH = 8


class SecretsHiddenReporterFilter(SafeExceptionReporterFilter):
    """Django's error-report filter, also on the debug page, and thorough about POSTed secrets.

    Django applies sensitive_variables and sensitive_post_parameters only with DEBUG off, so
    the debug page showed a typed webhook address in full. Here they always apply, and the
    value of a sensitive POST parameter is hidden in every frame that holds it under another
    name (a form field's `value`, a service's keyword arguments), not only where it was named.
    """

    def is_active(self, request: HttpRequest | None) -> bool:
        return True

    def get_traceback_frame_variables(self, request: HttpRequest | None, tb_frame: Any) -> list[tuple[str, Any]]:
        variables = super().get_traceback_frame_variables(request, tb_frame)
        secrets = _posted_secrets(request)
        if not secrets:
            return variables
        return [(name, self.cleansed_substitute if _holds(value, secrets) else value) for name, value in variables]


def _posted_secrets(request: HttpRequest | None) -> list[str]:
    names = getattr(request, "sensitive_post_parameters", None) if request is not None else None
    if not names:
        return []
    posted = request.POST
    keys = posted.keys() if names == "__ALL__" else names
    return [
        value
        for key in keys
        for value in posted.getlist(key)
        if isinstance(value, str) and len(value) >= _SECRET_MIN_LENGTH
    ]


def _holds(value: Any, secrets: list[str]) -> bool:
    try:
        shown = value if isinstance(value, str) else repr(value)
    except Exception:
        return True  # what cannot be looked at cannot be shown safely either
    return any(secret in shown for secret in secrets)
