"""Helpers for tests that start other processes (gunicorn, db_worker, nginx)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import requests
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent


def shared_test_database_url() -> str:
    """The test database (not the one DATABASE_URL names) as a URL for another process."""
    db = connection.settings_dict
    password = f":{quote(db['PASSWORD'], safe='')}" if db["PASSWORD"] else ""
    port = f":{db['PORT']}" if db["PORT"] else ""
    return f"postgres://{quote(db['USER'], safe='')}{password}@{db['HOST'] or '127.0.0.1'}{port}/{db['NAME']}"


class Server:
    """One gunicorn, given its listening socket by us (no port to guess, no race)."""

    def __init__(self, env: dict[str, str]) -> None:
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.socket.set_inheritable(True)
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}"
        command = [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            "dashboard/gunicorn_conf.py",
            "--bind",
            f"fd://{self.socket.fileno()}",
        ]
        self.process = subprocess.Popen(command, cwd=ROOT, env=env, pass_fds=(self.socket.fileno(),))

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with status {self.process.returncode} at start-up")
            try:
                # The socket listens from the start; the answer waits for a worker to boot.
                if requests.get(self.url + "/readyz", timeout=timeout).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"gunicorn at {self.url} was not ready within {timeout} s")

    def worker_pids(self) -> list[int]:
        """The gunicorn workers: the master's children, as Linux's /proc lists them."""
        pid = self.process.pid
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.socket.close()
