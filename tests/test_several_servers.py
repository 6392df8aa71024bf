"""Two app servers over one database and one cache: what holds on one holds on the other.

Two gunicorn servers (production settings, dashboard/gunicorn_conf.py: threaded workers)
on two ports share the test database (PostgreSQL), Redis and the Mixpanel stand-in.
A sign-in on one is valid on the other, a Refresh on one is seen by the other,
twenty presses of Force conclude split across both send exactly one PUT, and a press
whose worker is killed (kill -9) while Mixpanel holds its PUT is resolved by the
reconcile task in a real `db_worker` process, with no second PUT.

PostgreSQL with Redis only: SQLite's in-memory test database cannot be shared with
other processes, and without Redis each process keeps its own cache.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.db import connection
from django.db.models import F
from django.tasks import TaskResultStatus
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from experiments.forms import datetime_local_value
from experiments.models import (
    AttemptState,
    AuditEntry,
    ConclusionAttempt,
    ConclusionClaim,
    EntryKind,
    Membership,
    Role,
)
from tests.factories import assert_chain_valid
from tests.processes import Server, shared_test_database_url

ROOT = Path(__file__).resolve().parent.parent
PRESSES = 20
PASSWORD = "two-servers-pw"


def _skip_reason() -> str | None:
    if connection.vendor != "postgresql":
        return (
            "several-servers test needs PostgreSQL (set DATABASE_URL=postgres://...): SQLite's in-memory test "
            "database cannot be shared with other processes"
        )
    if not os.environ.get("REDIS_URL"):
        return "several-servers test needs REDIS_URL: without Redis every process keeps its own cache"
    return None


@pytest.fixture(scope="module")
def servers(django_db_setup, django_db_blocker, standin_server):
    with django_db_blocker.unblock():
        reason = _skip_reason()
        if reason:
            pytest.skip(reason)
        database_url = shared_test_database_url()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "DJANGO_DEBUG": "0",
        "DJANGO_LOG_LEVEL": "WARNING",
        "MIXPANEL_API_BASE_URL": standin_server.url,
        "WEB_CONCURRENCY": "2",
        "GUNICORN_THREADS": "6",
    }
    started = [Server(env), Server(env)]
    try:
        for server in started:
            server.wait_ready()
        yield started
    finally:
        for server in started:
            server.stop()


@pytest.fixture
def concluder(workspace):
    from django.contrib.auth import get_user_model

    # The servers check passwords with the production hashers, not the tests' fast MD5;
    # a low iteration count keeps the sign-in quick (the server upgrades it on sign-in).
    hasher = PBKDF2PasswordHasher()
    user = get_user_model().objects.create(
        username="casey", first_name="Casey", password=hasher.encode(PASSWORD, hasher.salt(), iterations=1000)
    )
    Membership.objects.create(user=user, workspace=workspace, role=Role.CONCLUDER)
    return user


def sign_in(base_url: str, username: str) -> requests.Session:
    browser = requests.Session()
    browser.get(base_url + "/accounts/login/", timeout=30)
    response = browser.post(
        base_url + "/accounts/login/",
        data={"username": username, "password": PASSWORD},
        headers={"X-CSRFToken": browser.cookies["csrftoken"]},
        allow_redirects=False,
        timeout=30,
    )
    assert response.status_code == 302, response.text[:500]
    assert response.headers["Location"] == "/"
    return browser


def with_cookies_of(browser: requests.Session) -> requests.Session:
    """Another browser tab: the same cookies, its own connection."""
    other = requests.Session()
    other.cookies.update(browser.cookies.get_dict())
    return other


def post(browser: requests.Session, url: str, **kwargs) -> requests.Response:
    headers = {"X-CSRFToken": browser.cookies["csrftoken"], **kwargs.pop("headers", {})}
    return browser.post(url, headers=headers, allow_redirects=False, timeout=60, **kwargs)


@pytest.mark.django_db(transaction=True)
def test_a_sign_in_on_one_server_is_valid_on_the_other(servers, concluder):
    one, two = servers
    on_one = sign_in(one.url, "casey")

    on_two = with_cookies_of(on_one)
    page = on_two.get(two.url + "/", allow_redirects=False, timeout=30)
    assert page.status_code == 200
    assert "Casey" in page.text
    assert requests.get(two.url + "/", allow_redirects=False, timeout=30).status_code == 302  # no cookie: no entry

    # Logging out on one ends the session on the other too.
    assert post(on_one, one.url + "/accounts/logout/").status_code in (200, 302)
    again = on_two.get(two.url + "/", allow_redirects=False, timeout=30)
    assert again.status_code == 302
    assert again.headers["Location"].startswith("/accounts/login/")


@pytest.mark.django_db(transaction=True)
def test_a_refresh_on_one_server_is_seen_by_the_other(servers, standin, workspace, concluder):
    one, two = servers
    on_one = sign_in(one.url, "casey")
    on_two = with_cookies_of(on_one)
    list_path = f"/w/{workspace.pk}/"
    assert on_one.get(one.url + list_path, timeout=30).status_code == 200  # one reads Mixpanel, fills the cache
    standin.add_experiment(1001, name="Arrived after the first read")

    before = on_two.get(two.url + list_path + "?q=Arrived", timeout=30)
    assert before.status_code == 200
    assert "Arrived after the first read" not in before.text  # two serves the shared copy

    refreshed = post(on_one, one.url + list_path + "refresh/")
    assert refreshed.status_code == 302

    after = on_two.get(two.url + list_path + "?q=Arrived", timeout=30)
    assert "Arrived after the first read" in after.text
    list_reads = [r for r in standin.requests(method="GET") if r.path.rstrip("/").endswith("/experiments")]
    assert len(list_reads) == 2  # the first read and the Refresh; the other server asked nobody


@pytest.mark.django_db(transaction=True)
def test_twenty_presses_split_across_two_servers_send_one_put(servers, standin, workspace, concluder):
    on_one = sign_in(servers[0].url, "casey")
    experiment = standin.find(1001, status="active")
    # Slow PUTs keep the first press in flight while the others arrive.
    standin.set_fault("latency", experiment_id=experiment["id"], method="PUT", latency_ms=500)
    url_path = f"/w/{workspace.pk}/experiments/{experiment['id']}/force-conclude/"
    form = {
        "reason_category": "business",
        "reason_text": "Pressed on two servers at once.",
        "end_date": datetime_local_value(timezone.now()),
        "back": "list",
    }
    barrier = threading.Barrier(PRESSES)
    answers: list = [None] * PRESSES

    def press(index: int) -> None:
        server = servers[index % 2]
        tab = with_cookies_of(on_one)
        try:
            barrier.wait(timeout=30)
            answers[index] = post(tab, server.url + url_path, data=form, headers={"HX-Request": "true"})
        except Exception as exc:  # reported below with the others
            answers[index] = exc

    threads = [threading.Thread(target=press, args=(i,)) for i in range(PRESSES)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert [getattr(a, "status_code", a) for a in answers] == [200] * PRESSES
    assert len(standin.requests(method="PUT", path_contains=experiment["id"])) == 1
    assert standin.experiment(1001, experiment["id"])["status"] == "concluded"
    assert ConclusionAttempt.objects.filter(state=AttemptState.SUCCEEDED).count() == 1
    assert ConclusionAttempt.objects.filter(state=AttemptState.FAILED).count() == PRESSES - 1
    assert AuditEntry.objects.filter(kind=EntryKind.CONCLUSION_REQUESTED).count() == PRESSES
    # Every press got its own request id back (half of them from each server).
    ids = [a.headers["X-Request-ID"] for a in answers]
    assert len(set(ids)) == PRESSES
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    assert_chain_valid()


def run_db_worker(standin_url: str) -> subprocess.CompletedProcess:
    """`manage.py db_worker`, as make run and make serve start it, until the queue has nothing due."""
    env = {**os.environ, "DATABASE_URL": shared_test_database_url(), "MIXPANEL_API_BASE_URL": standin_url}
    command = [sys.executable, "manage.py", "db_worker", "--batch", "--no-reload", "--no-startup-delay"]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def wait_for(condition, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


@pytest.mark.django_db(transaction=True)
def test_a_press_whose_worker_is_killed_mid_put_is_resolved_by_the_task_with_no_second_put(
    servers, standin, workspace, concluder
):
    one, two = servers
    on_one = sign_in(one.url, "casey")
    experiment = standin.find(1001, status="active")
    # The stand-in applies the PUT and holds its answer: the process dies before hearing it.
    standin.set_fault("latency", experiment_id=experiment["id"], method="PUT", latency_ms=5000)
    url_path = f"/w/{workspace.pk}/experiments/{experiment['id']}/force-conclude/"
    form = {
        "reason_category": "business",
        "reason_text": "The server died under this press.",
        "end_date": datetime_local_value(timezone.now()),
        "back": "list",
    }
    answer: list = []
    pressing = threading.Thread(
        target=lambda: answer.append(_answer_or_error(on_one, one.url + url_path, form)), daemon=True
    )
    pressing.start()
    wait_for(lambda: standin.requests(method="PUT", path_contains=experiment["id"]), "the PUT to reach Mixpanel")
    for pid in one.worker_pids():  # whichever of them serves the press
        os.kill(pid, signal.SIGKILL)
    pressing.join(timeout=30)
    assert isinstance(answer[0], requests.RequestException)  # no answer: the worker is gone

    attempt = ConclusionAttempt.objects.get()
    assert attempt.state == AttemptState.REQUESTED
    assert ConclusionClaim.objects.filter(attempt=attempt).exists()  # still blocks a second PUT
    (task,) = DBTaskResult.objects.all()  # queued with the intent, before the PUT left
    assert task.args_kwargs["args"] == [attempt.pk, 1]
    assert task.run_after > attempt.created_at

    # While the PUT may still be in flight the worker leaves the task alone.
    reads = len(standin.requests(method="GET", path_contains=experiment["id"]))
    early = run_db_worker(standin.url)
    assert early.returncode == 0, early.stderr[-2000:]
    attempt.refresh_from_db()
    assert attempt.state == AttemptState.REQUESTED
    assert len(standin.requests(method="GET", path_contains=experiment["id"])) == reads

    # Past the in-flight limit (moved back an hour rather than waited for), the task reads once.
    ConclusionAttempt.objects.update(created_at=F("created_at") - dt.timedelta(hours=1))
    DBTaskResult.objects.update(run_after=timezone.now())
    worker = run_db_worker(standin.url)
    assert worker.returncode == 0, worker.stderr[-2000:]
    task.refresh_from_db()
    assert (task.status, task.return_value) == (TaskResultStatus.SUCCESSFUL, "applied"), worker.stderr[-2000:]
    attempt.refresh_from_db()
    assert attempt.state == AttemptState.RECONCILED_APPLIED
    kinds = list(AuditEntry.objects.filter(attempt=attempt).order_by("seq").values_list("kind", flat=True))
    assert kinds == [EntryKind.CONCLUSION_REQUESTED, EntryKind.CONCLUSION_RECONCILED]
    assert len(standin.requests(method="GET", path_contains=experiment["id"])) == reads + 1

    # A press on the other server now sends nothing: the experiment is concluded.
    again = post(with_cookies_of(on_one), two.url + url_path, data=form, headers={"HX-Request": "true"})
    assert again.status_code == 200
    # The page tells it in its one notice (the HX-Trigger showToast event).
    assert "already concluded" in json.loads(again.headers["HX-Trigger"])["showToast"]["message"]
    assert len(standin.requests(method="PUT", path_contains=experiment["id"])) == 1
    # (No verify_audit here: moving created_at back is exactly the edit it reports.)


def _answer_or_error(browser: requests.Session, url: str, form: dict) -> requests.Response | Exception:
    try:
        return post(browser, url, data=form, headers={"HX-Request": "true"})
    except requests.RequestException as exc:
        return exc
