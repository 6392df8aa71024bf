"""A real server for B5 and B6: gunicorn with threaded (gthread) workers, plus an HTTP load generator.

gunicorn gets its listening socket from us (`--bind fd://N`), so there is no port to guess
and no race. The serving processes' memory is read from /proc (VmRSS now, VmHWM = peak).
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.bench import common

ROOT = Path(__file__).resolve().parents[2]


class Gunicorn:
    """gunicorn serving the dashboard (bench settings) from this process's environment."""

    def __init__(self, *, workers: int, threads: int, env: dict[str, str] | None = None) -> None:
        self.workers = workers
        self.threads = threads
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self._socket: socket.socket | None = None
        self._started_workers: dict[int, str | None] = {}

    def start(self, *, ready_timeout: float = 60.0) -> Gunicorn:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        sock.set_inheritable(True)
        self._socket = sock
        self.port = sock.getsockname()[1]
        command = [
            sys.executable,
            "-m",
            "gunicorn",
            "dashboard.wsgi:application",
            "--bind",
            f"fd://{sock.fileno()}",
            "--worker-class",
            "gthread",
            "--workers",
            str(self.workers),
            "--threads",
            str(self.threads),
            "--log-level",
            "warning",
            "--worker-tmp-dir",
            "/dev/shm" if Path("/dev/shm").is_dir() else "/tmp",  # noqa: S108 - gunicorn's heartbeat files
        ]
        self.process = subprocess.Popen(command, cwd=ROOT, env=self.env, pass_fds=(sock.fileno(),))
        deadline = time.monotonic() + ready_timeout
        while True:
            if self.process.poll() is not None:
                raise common.NotMeasured(f"gunicorn exited with status {self.process.returncode} at start-up")
            try:
                status, _ = self.request("/healthz")
                if status == 200 and len(self.worker_pids()) == self.workers:
                    self._started_workers = {pid: _start_time(pid) for pid in self.worker_pids()}
                    return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise common.NotMeasured("gunicorn did not answer /healthz within a minute")
            time.sleep(0.2)

    def request(self, path: str, headers: dict[str, str] | None = None, *, timeout: float = 30) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request("GET", path, headers=headers or {})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def worker_pids(self) -> list[int]:
        """The worker processes (children of the gunicorn master)."""
        if self.process is None:
            return []
        master = self.process.pid
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # "pid (comm) state ppid ..." - comm may hold spaces, so split after the last ")".
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[1]) == master:
                pids.append(int(entry.name))
        return sorted(pids)

    def memory_mb(self, key: str = "VmHWM") -> dict[int, float]:
        """Per worker: VmHWM (peak resident set) or VmRSS (now), in MB."""
        found = {}
        for pid in self.worker_pids():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith(key + ":"):
                        found[pid] = round(int(line.split()[1]) / 1024, 1)
            except OSError:
                continue
        return found

    def stop(self) -> None:
        workers = {**self._started_workers, **{pid: _start_time(pid) for pid in self.worker_pids()}}
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        # A worker can outlive its master (e.g. Ctrl-C reached both): end the ones we started,
        # recognised by pid and start time so a reused pid is never touched.
        deadline = time.monotonic() + 5
        for pid, started in workers.items():
            while started is not None and _start_time(pid) == started:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM if time.monotonic() < deadline else signal.SIGKILL)
                time.sleep(0.1)
        self._started_workers = {}
        self.process = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def _start_time(pid: int) -> str | None:
    """A process's start time (field 22 of /proc/PID/stat), or None when it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def session_cookie(user: Any) -> str:
    """A Cookie header of a real logged-in session (stored in the shared database)."""
    from django.conf import settings
    from django.test import Client

    client = Client()
    client.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"


@dataclass
class LoadResult:
    requests: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    first_error: str = ""

    def summary(self) -> dict[str, Any]:
        stats = common.summary(self.latencies)
        return {
            "req_per_s": round(self.requests / self.seconds, 1) if self.seconds else 0.0,
            "p50_ms": stats["p50_ms"],
            "p95_ms": stats["p95_ms"],
            "requests": self.requests,
            "errors": self.errors,
        }


def load(
    port: int, path: str, *, headers: dict[str, str], concurrency: int, seconds: float, warmup: float
) -> LoadResult:
    """`concurrency` keep-alive clients GET `path` for warmup + seconds.

    Requests that complete in the last `seconds` are counted (req/s) and their latencies kept.
    """
    result = LoadResult()
    lock = threading.Lock()
    start = time.monotonic()
    measure_from = start + warmup
    stop_at = measure_from + seconds

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            while True:
                began = time.monotonic()
                if began >= stop_at:
                    return
                try:
                    conn.request("GET", path, headers=headers)
                    response = conn.getresponse()
                    response.read()
                    ok = response.status == 200
                    status = str(response.status)
                    if response.getheader("Connection", "").lower() == "close":
                        conn.close()
                except (OSError, http.client.HTTPException) as exc:
                    ok, status = False, type(exc).__name__
                    conn.close()
                ended = time.monotonic()
                # Throughput counts the requests that completed inside the window.
                if not measure_from <= ended <= stop_at:
                    continue
                with lock:
                    if ok:
                        result.requests += 1
                        result.latencies.append(ended - began)
                    else:
                        result.errors += 1
                        result.first_error = result.first_error or status
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result.seconds = seconds
    return result
