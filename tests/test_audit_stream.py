"""The audit trail's stream to a SIEM collector: every entry, in order, with retries and
"gave up" records, pushed by the worker's housekeeping."""

from __future__ import annotations

import datetime as dt
import json
import threading
from http.server import BaseHTTPRequestHandler

import pytest
from django.utils import timezone

from experiments import auditlog
from experiments.models import AuditEntry, AuditStreamBatch, DeliveryState, EntryKind
from experiments.notifications import siem
from tests.loopback import LoopbackServer

pytestmark = pytest.mark.django_db
TOKEN = "hec-token-3f9a0b"


class _Collector(BaseHTTPRequestHandler):
    received: list[tuple[str, bytes]] = []
    status = 200
    lock = threading.Lock()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        with self.lock:
            self.received.append((self.headers.get("Authorization", ""), body))
        self.send_response(self.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def collector(settings):
    _Collector.received, _Collector.status = [], 200
    server = LoopbackServer(_Collector, name="hec")
    settings.AUDIT_STREAM_URL = server.url + "/services/collector/event"
    settings.AUDIT_STREAM_TOKEN = TOKEN
    settings.NOTIFY_MAX_TRIES = 2
    yield _Collector
    server.stop()


def entries(count: int) -> None:
    for number in range(count):
        auditlog.append_entry(kind=EntryKind.BOOKMARK_ADDED, actor_name="test", payload={"n": number})


def pushed_seqs(collector) -> list[int]:
    return [json.loads(line)["event"]["seq"] for _, body in collector.received for line in body.splitlines()]


def push_all() -> list[str | None]:
    states = []
    while (state := siem.audit_stream_push()) is not None:
        states.append(state)
        AuditStreamBatch.objects.update(next_try_at=timezone.now() - dt.timedelta(seconds=1))  # no waiting in tests
    return states


def test_every_entry_goes_in_order_in_batches_with_its_hash(collector, monkeypatch):
    monkeypatch.setattr(siem, "BATCH_SIZE", 4)
    entries(10)
    assert push_all() == [DeliveryState.SENT] * 3
    assert pushed_seqs(collector) == list(range(1, 11))
    authorization, body = collector.received[0]
    assert authorization == f"Splunk {TOKEN}"
    first = json.loads(body.splitlines()[0])["event"]
    assert first["hash"] == AuditEntry.objects.get(seq=1).hash
    entries(2)
    assert push_all() == [DeliveryState.SENT]
    assert pushed_seqs(collector)[-2:] == [11, 12]


def test_a_failing_collector_is_retried_then_gives_up_and_the_stream_goes_on(collector, monkeypatch, caplog):
    monkeypatch.setattr(siem, "BATCH_SIZE", 5)
    entries(7)
    collector.status = 500
    assert siem.audit_stream_push() == DeliveryState.FAILED
    assert siem.audit_stream_push() is None  # its retry is not due yet
    AuditStreamBatch.objects.update(next_try_at=timezone.now())
    assert siem.audit_stream_push() == DeliveryState.GAVE_UP
    gave_up = AuditStreamBatch.objects.get(state=DeliveryState.GAVE_UP)
    assert (gave_up.first_seq, gave_up.last_seq, gave_up.tries) == (1, 5, 2)
    assert gave_up.last_error == "HTTP 500 from the collector"
    collector.status = 200
    assert push_all() == [DeliveryState.SENT]
    assert pushed_seqs(collector)[-2:] == [6, 7]
    assert TOKEN not in caplog.text


def test_nothing_is_pushed_without_a_collector(settings):
    settings.AUDIT_STREAM_URL = ""
    entries(1)
    assert siem.audit_stream_push() is None
    assert not AuditStreamBatch.objects.exists()
