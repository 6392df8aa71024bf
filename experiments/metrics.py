"""What each process counts for Prometheus: requests, Mixpanel calls, the list cache, attempts'
moves and notification tries.

Every label is one of a few fixed words (a route's name, an HTTP method, a status code, an
operation, an outcome): never an experiment id, a person or anything Mixpanel sent, so the
number of series stays small whatever the data. Counts that the database already holds
(open attempts, due tasks, workers' heartbeats) are read when /metrics is scraped instead
(experiments.selectors.metrics).

Several processes (gunicorn's workers and the task worker) each count their own share.
With PROMETHEUS_MULTIPROC_DIR set (bin/serve and `make run` set it), prometheus_client keeps
each process's values in files there and /metrics adds them up, so every event is counted
once whichever process saw it. Without it (tests, a single process) values live in memory.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Histogram, multiprocess
from prometheus_client.registry import REGISTRY

# Seconds: from a cached page (milliseconds) to a slow Mixpanel (its 60 s write deadline).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
# Seconds a served copy of a list had been kept: fresh (a minute) to a week of outage.
AGE_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 900, 3600, 6 * 3600, 24 * 3600, 7 * 24 * 3600)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

# Outcomes of a call to Mixpanel.
OK = "ok"
CLIENT_ERROR = "4xx"
RATE_LIMITED = "429"
SERVER_ERROR = "5xx"
TIMEOUT = "timeout"
UNKNOWN = "unknown"

requests_total = Counter(
    "desk_http_requests_total", "Requests answered, by route name, method and status.", ["route", "method", "status"]
)
request_seconds = Histogram(
    "desk_http_request_duration_seconds",
    "Time to answer a request (to the first byte of a streamed one), by route name and method.",
    ["route", "method"],
    buckets=LATENCY_BUCKETS,
)
mixpanel_calls_total = Counter(
    "desk_mixpanel_calls_total",
    "Calls to Mixpanel by operation (list, get, force_conclude, decide) and outcome.",
    ["operation", "outcome"],
)
mixpanel_call_seconds = Histogram(
    "desk_mixpanel_call_duration_seconds",
    "Time a call to Mixpanel took, retries included, by operation.",
    ["operation"],
    buckets=LATENCY_BUCKETS,
)
mixpanel_list_bytes_total = Counter(
    "desk_mixpanel_list_bytes_total", "Bytes of experiment lists read from Mixpanel (the body as received)."
)
list_cache_total = Counter(
    "desk_list_cache_requests_total",
    "Reads of a workspace's experiment list: hit (a fresh copy), miss (Mixpanel was asked), revalidate "
    "(the last copy past its fresh period, read again by the worker) or stale (Mixpanel failed and an "
    "older copy was served).",
    ["result"],
)
list_copy_age_seconds = Histogram(
    "desk_list_copy_age_seconds", "How old the copy of a list was when it was served.", buckets=AGE_BUCKETS
)
attempt_moves_total = Counter(
    "desk_attempt_moves_total",
    "Attempts recorded in a state (a press, an outcome, an approval step), by action and state.",
    ["action", "state"],
)
notification_tries_total = Counter(
    "desk_notification_tries_total",
    "Tries to send a notification, by channel and the state they left it in (sent, failed: will retry, gave_up).",
    ["channel", "state"],
)


def request_observed(*, route: str, method: str, status: int, seconds: float) -> None:
    """One answered request. `route` is the URL pattern's name, never the path."""
    method = method if method in METHODS else "other"
    requests_total.labels(route, method, str(status)).inc()
    request_seconds.labels(route, method).observe(seconds)


def mixpanel_call_observed(*, operation: str, outcome: str, seconds: float) -> None:
    """One call to Mixpanel, however it ended."""
    mixpanel_calls_total.labels(operation, outcome).inc()
    mixpanel_call_seconds.labels(operation).observe(seconds)


def registry() -> CollectorRegistry:
    """What /metrics exposes: every process's values when PROMETHEUS_MULTIPROC_DIR is set, else this one's."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY
    combined = CollectorRegistry()
    multiprocess.MultiProcessCollector(combined)
    return combined
