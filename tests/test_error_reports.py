"""Error reports to Sentry: sent with the request id, never with a secret.

A local HTTP server stands in for Sentry and keeps every envelope the SDK posts.
"""

from __future__ import annotations

import gzip
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler

import pytest
import sentry_sdk

from experiments.errorreports import init_error_reports, scrub_text
from tests.loopback import LoopbackServer

WEBHOOK = "https://hooks.slack.com/services/T0DESK/B0DESK/zQ8kL2mN4pR6sT9uVwXyZab1"
SECRETS = (
    "zQ8kL2mN4pR6sT9uVwXyZab1",  # the webhook's path
    "session-cookie-value-8f3a",
    "csrf-cookie-value-77aa",
    "bearer-token-value-19bd",
    "CANARY-s3cr3t-do-not-leak",  # the Mixpanel secret the tests run with
    "user:pa55word",
)


class _Envelopes(BaseHTTPRequestHandler):
    received: list[bytes] = []
    lock = threading.Lock()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        with self.lock:
            self.received.append(body)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def sentry():
    """Sentry's SDK reporting to a local receiver for one test, then off again."""
    _Envelopes.received = []
    server = LoopbackServer(_Envelopes, name="sentry-stand-in")
    host = server.url.removeprefix("http://")
    init_error_reports(dsn=f"http://publickey@{host}/42", environment="test")
    try:
        yield _Envelopes
    finally:
        sentry_sdk.get_client().close()
        sentry_sdk.init()  # no DSN: reporting off for the other tests
        server.stop()


def events(receiver: type[_Envelopes]) -> list[dict]:
    sentry_sdk.flush(timeout=10)
    found = []
    for envelope in receiver.received:
        for line in envelope.splitlines():
            try:
                item = json.loads(line)
            except ValueError:
                continue
            if isinstance(item, dict) and "event_id" in item and ("exception" in item or "logentry" in item):
                found.append(item)
    return found


def raw(receiver: type[_Envelopes]) -> bytes:
    return b"\n".join(receiver.received)


@pytest.mark.urls("tests.error_urls")
def test_an_unhandled_error_is_reported_with_its_request_id_and_no_secret(client, sentry):
    client.raise_request_exception = False
    client.cookies["sessionid"] = "session-cookie-value-8f3a"
    client.cookies["csrftoken"] = "csrf-cookie-value-77aa"
    response = client.post(
        "/boom/?next=https://user:pa55word@example.com/x",
        {"webhook_url": WEBHOOK, "password": "hunter2-secret"},
        headers={"X-Request-ID": "req-sentry-1", "Authorization": "Bearer bearer-token-value-19bd"},
    )
    assert response.status_code == 500
    (event,) = events(sentry)
    assert event["tags"]["request_id"] == "req-sentry-1"
    assert event["exception"]["values"][-1]["type"] == "RuntimeError"
    assert "cookies" not in event["request"]
    assert "data" not in event["request"]
    assert "query_string" not in event["request"]
    everything = raw(sentry)
    for secret in (*SECRETS, "hunter2-secret"):
        assert secret.encode() not in everything, secret
    # Frames are kept (where it failed), their local variables are not.
    frames = event["exception"]["values"][-1]["stacktrace"]["frames"]
    assert frames
    assert all("vars" not in frame for frame in frames)


def test_an_error_logged_by_a_task_is_reported_with_web_addresses_cut(sentry):
    try:
        raise ConnectionError(f"could not post to {WEBHOOK}")
    except ConnectionError:
        logging.getLogger("django.tasks").error("Task id=1 path=x state=FAILED", exc_info=True)
    logging.getLogger("experiments.notifications").error("Webhook %s refused the message", WEBHOOK)
    reported = events(sentry)
    assert len(reported) == 2
    everything = raw(sentry)
    assert b"zQ8kL2mN4pR6sT9uVwXyZab1" not in everything
    assert b"hooks.slack.com" in everything  # the host says which service; the path stays secret


def test_reporting_is_off_without_a_dsn(settings):
    assert settings.SENTRY_DSN == ""
    assert not sentry_sdk.get_client().dsn


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"post to {WEBHOOK} failed", "post to https://hooks.slack.com/[cut] failed"),
        ("see http://user:pw@10.0.0.1:8080/x?y=1", "see http://10.0.0.1:8080/[cut]"),
        ("no address here", "no address here"),
    ],
)
def test_web_addresses_are_cut_to_their_host(text, expected):
    assert scrub_text(text) == expected
