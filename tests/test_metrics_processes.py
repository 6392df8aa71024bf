"""Metrics and the worker's health across real processes: gunicorn with two workers and
`manage.py db_worker`, over the test database (PostgreSQL only: SQLite's in-memory test
database cannot be shared with other processes).

Each event is counted once in /metrics whichever process saw it, because every process
keeps its counts in files in one PROMETHEUS_MULTIPROC_DIR that /metrics adds up.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import requests
from django.db import connection
from django.test import Client, override_settings
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from experiments.forms import datetime_local_value
from experiments.models import DeliveryState, NotificationDelivery, Workspace
from experiments.notifications import webhook, webhook_address
from tests.processes import ROOT, Server, shared_test_database_url
from tests.test_several_servers import concluder, post, sign_in  # noqa: F401 - concluder: a fixture

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def needs_postgresql():
    if connection.vendor != "postgresql":
        pytest.skip(
            "needs PostgreSQL (set DATABASE_URL=postgres://...): SQLite's in-memory test database cannot be "
            "shared with gunicorn and the worker"
        )


def process_env(tmp_path, standin_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": shared_test_database_url(),
        "DJANGO_DEBUG": "0",
        "DJANGO_LOG_LEVEL": "WARNING",
        "MIXPANEL_API_BASE_URL": standin_url,
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
        "WEB_CONCURRENCY": "2",
        "GUNICORN_THREADS": "4",
        "NOTIFY_MAX_TRIES": "1",
        "NOTIFY_WEBHOOK_ALLOW_NETWORKS": "127.0.0.0/8",
    }


def samples(base_url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = requests.get(base_url + "/metrics", timeout=30)
    assert response.status_code == 200, response.text[:300]
    found = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: dict, name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def test_each_event_is_counted_once_across_two_gunicorn_workers_and_the_task_worker(
    needs_postgresql,
    tmp_path,
    standin,
    workspace,
    concluder,  # noqa: F811 - the fixture imported above
    webhook_receiver,
):
    env = process_env(tmp_path, standin.url)
    webhook_receiver.answer_with(500)  # every notification fails, and with one try gives up
    Workspace.objects.filter(pk=workspace.pk).update(
        webhook_url_sealed=webhook.webhook_seal(webhook_receiver.url),
        webhook_url_hint=webhook_address.webhook_hint(webhook_receiver.url),
    )
    server = Server(env)
    try:
        server.wait_ready()
        browser = sign_in(server.url, "casey")
        for _ in range(20):
            assert requests.get(server.url + "/healthz", timeout=30).status_code == 200

        # A press: the list, the read and the PUT.
        active = standin.find(1001, status="active")
        form = {
            "reason_category": "business",
            "reason_text": "Counted.",
            "end_date": datetime_local_value(timezone.now()),
        }
        pressed = post(browser, f"{server.url}/w/{workspace.pk}/experiments/{active['id']}/force-conclude/", data=form)
        assert pressed.status_code == 302
        # A decision: the page's read, the service's read and the PATCH.
        concluded = standin.find(1001, status="concluded")
        decided = post(
            browser,
            f"{server.url}/w/{workspace.pk}/experiments/{concluded['id']}/decide/",
            data={"decision": "none", "note": "Keep control."},
        )
        assert decided.status_code == 302
        # A Mixpanel 429 on a Refresh: one list call, retries and all.
        standin.set_fault("rate_limit", workspace_id=1001, method="GET", retry_after=0)
        assert post(browser, f"{server.url}/w/{workspace.pk}/refresh/").status_code == 302
        standin.clear_faults()

        # The workers send the two outcomes' notifications, which fail and give up (one batch run
        # takes both queues: notifications have a worker of their own in make serve).
        worker = subprocess.run(
            [
                sys.executable,
                "manage.py",
                "db_worker",
                "--batch",
                "--no-reload",
                "--no-startup-delay",
                "--queue-name",
                "*",
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert worker.returncode == 0, worker.stderr[-2000:]
        gave_up = NotificationDelivery.objects.filter(state=DeliveryState.GAVE_UP, channel="webhook").count()
        assert gave_up == 2

        found = samples(server.url)
        assert value(found, "desk_http_requests_total", route="healthz", method="GET", status="200") == 20
        route = "experiments:experiment-force-conclude"
        assert value(found, "desk_http_requests_total", route=route, method="POST", status="302") == 1
        route = "experiments:experiment-decide"
        assert value(found, "desk_http_requests_total", route=route, method="POST", status="302") == 1
        assert value(found, "desk_mixpanel_calls_total", operation="force_conclude", outcome="ok") == 1
        assert value(found, "desk_mixpanel_calls_total", operation="decide", outcome="ok") == 1
        assert value(found, "desk_mixpanel_calls_total", operation="list", outcome="429") == 1
        assert value(found, "desk_notification_tries_total", channel="webhook", state="gave_up") == gave_up
        assert value(found, "desk_attempt_moves_total", action="conclusion", state="succeeded") == 1
        assert value(found, "desk_attempt_moves_total", action="decision", state="succeeded") == 1
        # Both gunicorn workers and the task worker wrote their share.
        assert len({path.name.rsplit("_", 1)[-1] for path in tmp_path.glob("*.db")}) >= 2
    finally:
        server.stop()


class Worker:
    """`manage.py db_worker`, as make serve runs it, beating every tenth of a second."""

    def __init__(self, env: dict[str, str]) -> None:
        command = [sys.executable, "manage.py", "db_worker", "--no-reload", "--no-startup-delay", "--interval", "0.2"]
        self.process = subprocess.Popen(command, cwd=ROOT, env={**env, "WORKER_HEARTBEAT_SECONDS": "0.1"})

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)


def wait_for_status(status: int, *, within: float) -> float:
    """Poll /readyz/worker (in this process, over the shared database) until it answers `status`."""
    started = time.monotonic()
    client = Client()
    while time.monotonic() - started < within:
        if client.get("/readyz/worker").status_code == status:
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"/readyz/worker did not answer {status} within {within} s")


@override_settings(WORKER_STALE_SECONDS=2)
def test_readyz_worker_turns_503_when_the_worker_stops_and_200_after_a_restart(needs_postgresql, tmp_path, standin):
    env = process_env(tmp_path, standin.url)
    worker = Worker(env)
    try:
        wait_for_status(200, within=60)
    finally:
        worker.kill()
    # The threshold (2 s), then a margin for the poll.
    assert wait_for_status(503, within=2 + 3) <= 2 + 3
    restarted = Worker(env)
    try:
        wait_for_status(200, within=60)
    finally:
        restarted.kill()
