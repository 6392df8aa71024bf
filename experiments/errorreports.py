"""Error reports to Sentry (SENTRY_DSN), from the app servers and the task worker.

Off unless SENTRY_DSN is set. A report carries the request id and what failed where, and
never a secret: no cookies, no request headers but a few harmless ones, no request body or
query string, no local variables of the failing frames, and any web address in a message
is cut to its scheme and host (a webhook's path is its secret; Mixpanel's answers and the
client's own messages are scrubbed before they get here).
"""

from __future__ import annotations

import re
from typing import Any

import sentry_sdk
from sentry_sdk.integrations.django import DjangoIntegration
from sentry_sdk.integrations.logging import LoggingIntegration

from experiments import __version__
from experiments.observability import current_context

# Headers kept on a report: none of them can carry a credential.
KEPT_HEADERS = frozenset({"user-agent", "accept", "content-type", "content-length", "x-request-id", "hx-request"})
_URL = re.compile(r"(?P<origin>\b[a-z][a-z0-9+.-]*://[^/\s?#@]*@?[^/\s?#]*)[^\s\"'<>]*", re.IGNORECASE)


def scrub_text(text: str) -> str:
    """`text` with every web address cut to its scheme and host, credentials dropped."""
    return _URL.sub(lambda m: _origin(m.group("origin")), text)


def _origin(origin: str) -> str:
    scheme, _, rest = origin.partition("://")
    return f"{scheme}://{rest.rpartition('@')[2]}/[cut]"


def _scrub_values(value: Any) -> Any:
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, dict):
        return {key: _scrub_values(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_scrub_values(item) for item in value]
    return value


def before_send(event: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any]:
    """Tag the report with its request id and drop everything that could hold a secret."""
    request_id = current_context().get("request_id")
    if request_id:
        event.setdefault("tags", {})["request_id"] = request_id
    request = event.get("request")
    if isinstance(request, dict):
        headers = request.get("headers") or {}
        event["request"] = {
            "method": request.get("method"),
            "url": scrub_text(str(request.get("url") or "")),
            "headers": {name: value for name, value in headers.items() if name.lower() in KEPT_HEADERS},
        }
    event.pop("user", None)
    for key in ("exception", "logentry", "message", "breadcrumbs", "extra"):
        if key in event:
            event[key] = _scrub_values(event[key])
    return event


def init_error_reports(*, dsn: str, environment: str) -> None:
    """Send unhandled errors and ERROR log lines to Sentry at `dsn`."""
    sentry_sdk.init(
        dsn=dsn,
        environment=environment or None,
        release=f"experiment-desk@{__version__}",
        integrations=[DjangoIntegration(), LoggingIntegration(event_level="ERROR")],
        # Collected by the SDK only where no secret can be: before_send drops the rest again.
        data_collection={
            "user_info": False,
            "cookies": {"mode": "off"},
            "http_headers": {"request": {"mode": "allowlist", "terms": sorted(KEPT_HEADERS)}},
            "http_bodies": [],
            "url_query_params": {"mode": "off"},
            "stack_frame_variables": False,
            "database_query_data": False,
        },
        before_send=before_send,
        before_send_transaction=lambda event, hint: None,
        traces_sample_rate=0,
    )
