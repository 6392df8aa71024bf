"""/metrics: Prometheus's text format, for the operator's scraper only.

Open to addresses in METRICS_ALLOWED_NETWORKS (loopback by default) or to a request with
`Authorization: Bearer <METRICS_TOKEN>`. A request that a proxy forwarded is judged by the
client the proxy names, never by the proxy's own (often loopback) address.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Iterator

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from experiments import metrics
from experiments.selectors import metrics as metrics_selectors

MSG_REFUSED = "Metrics are only for the operator's scraper: from an allowed network, or with the metrics token.\n"
# Headers a reverse proxy adds: with one of them, the peer is a proxy and proves nothing.
FORWARDING_HEADERS = ("HTTP_X_FORWARDED_FOR", "HTTP_FORWARDED", "HTTP_X_REAL_IP")


class OperationalCollector(Collector):
    """The database's share of /metrics, read at each scrape."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        counts = metrics_selectors.operational_counts()
        waiting = GaugeMetricFamily(
            "desk_attempts_waiting", "Attempts not final yet, by action and state.", labels=["action", "state"]
        )
        for (action, state), number in sorted(counts.waiting_attempts.items()):
            waiting.add_metric([action, state], number)
        yield waiting
        yield _gauge(
            "desk_oldest_open_attempt_age_seconds",
            "Age of the oldest attempt sent (or about to be) whose outcome is not recorded; 0 when none.",
            counts.oldest_open_attempt_seconds,
        )
        queue = counts.queue
        yield _gauge("desk_tasks_due", "Tasks due and not yet started.", queue.due)
        yield _gauge(
            "desk_oldest_due_task_age_seconds",
            "How long the oldest due task has waited; 0 when none.",
            queue.oldest_due_seconds,
        )
        yield _gauge("desk_tasks_running", "Tasks a worker has started and not finished.", queue.running)
        yield _gauge("desk_tasks_failed", "Task results kept as failed (a task that raised).", queue.failed)
        beats = GaugeMetricFamily(
            "desk_worker_heartbeat_age_seconds", "Seconds since each task worker's last heartbeat.", labels=["worker"]
        )
        for worker_id, seconds in sorted(counts.heartbeats.items()):
            beats.add_metric([worker_id], seconds)
        yield beats
        deliveries = GaugeMetricFamily(
            "desk_notifications_waiting",
            "Notifications still to send, by channel and state (pending, failed: will retry).",
            labels=["channel", "state"],
        )
        for (channel, state), number in sorted(counts.waiting_deliveries.items()):
            deliveries.add_metric([channel, state], number)
        yield deliveries


def _gauge(name: str, documentation: str, value: float | None) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value or 0)


def _allowed_address(request: HttpRequest) -> bool:
    if any(request.META.get(name) for name in FORWARDING_HEADERS):
        return False
    try:
        peer = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    return any(peer in ipaddress.ip_network(network, strict=False) for network in settings.METRICS_ALLOWED_NETWORKS)


def _has_token(request: HttpRequest) -> bool:
    token = settings.METRICS_TOKEN
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return bool(token) and scheme.lower() == "bearer" and hmac.compare_digest(given.strip(), token)


@login_not_required
@never_cache
@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    """Every process's counters and the database's gauges, in Prometheus's text format."""
    if not (_allowed_address(request) or _has_token(request)):
        return HttpResponse(MSG_REFUSED, status=403, content_type="text/plain; charset=utf-8")
    database = CollectorRegistry()
    database.register(OperationalCollector())
    body = generate_latest(metrics.registry()) + generate_latest(database)
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)
