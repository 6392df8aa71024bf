"""The audit trail's stream to a SIEM collector (Splunk's HTTP Event Collector, and anything
that speaks it), set by the operator: AUDIT_STREAM_URL and AUDIT_STREAM_TOKEN (or _FILE).

Every entry of the hash chain goes, in order, in batches, with the same retry plan as a
notification (NOTIFY_MAX_TRIES tries, NOTIFY_BACKOFF_SECONDS doubling); a batch that still
fails gives up, is recorded (AuditStreamBatch) and counted, and the stream goes on. Each
event carries the entry's seq, hash and prev_hash, so the collector can check the chain.
The worker's housekeeping pushes it, so no request ever waits on the collector.
"""

from __future__ import annotations

import datetime as dt
import json
import logging

import requests
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone

from experiments import auditlog, metrics
from experiments.models import AuditEntry, AuditStreamBatch, DeliveryState

logger = logging.getLogger(__name__)

BATCH_SIZE = 100
CHANNEL = "siem"
MSG_TIMED_OUT = "timed out"
MSG_NO_CONNECTION = "could not connect"
MSG_HTTP_STATUS = "HTTP {status} from the collector"
MSG_FAILED = "the request failed ({kind})"
# States after which the stream goes on past a batch.
DONE = frozenset({DeliveryState.SENT, DeliveryState.GAVE_UP})


def event(entry: AuditEntry) -> dict:
    """One entry as an HEC event: every field its hash covers, and the hash."""
    return {
        "time": entry.created_at.timestamp(),
        "source": "experiment-desk",
        "sourcetype": "experiment-desk:audit",
        "event": {**auditlog.hashed_fields(entry), "hash": entry.hash},
    }


def post_events(entries: list[AuditEntry]) -> str:
    """POST the entries to the collector; "" when it took them, else what went wrong, in our words."""
    body = "\n".join(json.dumps(event(entry), ensure_ascii=False) for entry in entries).encode("utf-8")
    timeout = settings.NOTIFY_WEBHOOK_TIMEOUT
    try:
        response = requests.post(
            settings.AUDIT_STREAM_URL,
            data=body,
            headers={"Authorization": f"Splunk {settings.AUDIT_STREAM_TOKEN}", "Content-Type": "application/json"},
            timeout=(timeout, timeout),
            allow_redirects=False,
        )
    except requests.Timeout:
        return MSG_TIMED_OUT
    except requests.ConnectionError:
        return MSG_NO_CONNECTION
    except Exception as exc:  # never the exception's text: it could name the address
        return MSG_FAILED.format(kind=type(exc).__name__)
    return "" if 200 <= response.status_code < 300 else MSG_HTTP_STATUS.format(status=response.status_code)


def _next_batch(now: dt.datetime) -> AuditStreamBatch | None:
    """The batch to push now: the open one when its retry is due, else a new one after the
    last that is done; None when there is nothing to push (or the open one is not due)."""
    open_batch = AuditStreamBatch.objects.exclude(state__in=DONE).order_by("first_seq").first()
    if open_batch is not None:
        return open_batch if open_batch.next_try_at <= now else None
    after = AuditStreamBatch.objects.aggregate(last=Max("last_seq"))["last"] or 0
    seqs = list(AuditEntry.objects.filter(seq__gt=after).order_by("seq").values_list("seq", flat=True)[:BATCH_SIZE])
    if not seqs:
        return None
    try:
        with transaction.atomic():
            return AuditStreamBatch.objects.create(first_seq=seqs[0], last_seq=seqs[-1], next_try_at=now)
    except IntegrityError:
        return None  # another worker made it and pushes it


def audit_stream_push() -> str | None:
    """Push the next batch of the chain to the collector, if one is due; its new state, or None."""
    if not settings.AUDIT_STREAM_URL:
        return None
    now = timezone.now()
    batch = _next_batch(now)
    if batch is None:
        return None
    # The try is claimed first (compare-and-set on tries), so two workers never push it at once.
    if not AuditStreamBatch.objects.filter(pk=batch.pk, tries=batch.tries).update(
        tries=batch.tries + 1, next_try_at=now + dt.timedelta(hours=1)
    ):
        return None
    tries = batch.tries + 1
    entries = list(AuditEntry.objects.filter(seq__gte=batch.first_seq, seq__lte=batch.last_seq).order_by("seq"))
    error = post_events(entries)
    if not error:
        state, next_try = DeliveryState.SENT, now
    elif tries < settings.NOTIFY_MAX_TRIES:
        delay = dt.timedelta(seconds=settings.NOTIFY_BACKOFF_SECONDS * 2 ** (tries - 1))
        state, next_try = DeliveryState.FAILED, timezone.now() + delay
    else:
        state, next_try = DeliveryState.GAVE_UP, now
    AuditStreamBatch.objects.filter(pk=batch.pk).update(
        state=state, next_try_at=next_try, last_error=error[:500], sent_at=timezone.now() if not error else None
    )
    metrics.notification_tries_total.labels(CHANNEL, state).inc()
    if state == DeliveryState.GAVE_UP:
        logger.warning(
            "Audit stream: entries %s..%s gave up after %s tries: %s", batch.first_seq, batch.last_seq, tries, error
        )
    elif error:
        logger.info("Audit stream: entries %s..%s failed (try %s): %s", batch.first_seq, batch.last_seq, tries, error)
    return state
