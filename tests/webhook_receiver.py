"""A local webhook receiver for tests: a small HTTP server on 127.0.0.1 that records every POST.

Like a Slack incoming webhook it takes JSON and answers 200 "ok"; told to, it answers
another status (`answer_with(500)`), waits before answering (`delay`), or drips its answer
one byte at a time (`drip`, the seconds between bytes). Each request's path, body and Host
header are kept in order, so a test can say exactly what arrived.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.loopback import LoopbackServer


@dataclass(frozen=True)
class Received:
    path: str
    body: bytes
    content_type: str
    host: str = ""

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.json["text"]


class WebhookReceiver:
    """Start with `.start()`, stop with `.stop()`; `.url` is a webhook address with a secret-looking path."""

    def __init__(self) -> None:
        self.token = "T0DESK/B0TEST/" + secrets.token_urlsafe(18)
        self.received: list[Received] = []
        self.status = 200
        self.delay = 0.0
        self.drip = 0.0
        self.lock = threading.Lock()
        self._server: LoopbackServer | None = None
        self.url = ""

    def answer_with(self, status: int) -> None:
        self.status = status

    def reset(self) -> None:
        with self.lock:
            self.received.clear()
        self.status = 200
        self.delay = 0.0
        self.drip = 0.0

    def messages(self) -> list[Received]:
        with self.lock:
            return list(self.received)

    def start(self) -> WebhookReceiver:
        receiver = self

        class Handler(_Handler):
            owner = receiver

        self._server = LoopbackServer(Handler, name="webhook-receiver")
        self.url = f"{self._server.url}/services/{self.token}"
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()


class _Handler(BaseHTTPRequestHandler):
    owner: WebhookReceiver
    # Answers go out at once rather than waiting on Nagle's algorithm (as the stand-in does).
    disable_nagle_algorithm = True
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        with self.owner.lock:
            self.owner.received.append(
                Received(self.path, body, self.headers.get("Content-Type", ""), self.headers.get("Host", ""))
            )
        if self.owner.delay:
            time.sleep(self.owner.delay)
        status = self.owner.status
        answer = b"ok" if status < 300 else b"server_error"
        if self.owner.drip:
            self._drip(status)
            return
        try:
            self.send_response(status)
            if 300 <= status < 400:
                self.send_header("Location", "http://127.0.0.1:9/elsewhere")
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the sender timed out and hung up first (what a timeout test asks for)

    def _drip(self, status: int) -> None:
        """A whole answer, a byte at a time, until the sender hangs up: the status line alone
        takes several drips, and headers follow for as long again."""
        answer = f"HTTP/1.1 {status} OK\r\n".encode() + b"X-Slowly: " + b"z" * 40 + b"\r\n\r\n"
        try:
            for byte in answer:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(self.owner.drip)
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: the test reads `received`
