"""The API's guarantees across processes: gunicorn with two workers over PostgreSQL, the
Mixpanel stand-in holding each PUT so that presses overlap (PostgreSQL only: SQLite's
in-memory test database cannot be shared with gunicorn)."""

from __future__ import annotations

import os
import threading

import pytest
import requests
from django.db import connection

from experiments.models import AttemptState, ConclusionAttempt, TokenScope
from experiments.services import tokens as token_services
from tests.processes import Server, shared_test_database_url

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def server(standin, tmp_path):
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL: SQLite's in-memory test database cannot be shared with gunicorn")
    env = {
        **os.environ,
        "DATABASE_URL": shared_test_database_url(),
        "DJANGO_DEBUG": "0",
        "DJANGO_LOG_LEVEL": "WARNING",
        "MIXPANEL_API_BASE_URL": standin.url,
        "WEB_CONCURRENCY": "2",
        "GUNICORN_THREADS": "4",
    }
    started = Server(env)
    try:
        started.wait_ready()
        yield started
    finally:
        started.stop()


def race(url: str, secret: str, keys: list[str]) -> list[requests.Response]:
    """POST the same press once per key, all at once."""
    barrier = threading.Barrier(len(keys))
    answers: list = [None] * len(keys)

    def send(index: int) -> None:
        barrier.wait(timeout=30)
        answers[index] = requests.post(
            url,
            json={"reason": "From two release scripts at once."},
            headers={"Authorization": f"Bearer {secret}", "Idempotency-Key": keys[index]},
            timeout=60,
        )

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(keys))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=90)
    return answers


def test_two_keys_racing_send_one_put_and_the_loser_gets_409_with_the_attempt(server, standin, workspace, pm):
    experiment = standin.find(1001, status="active")
    standin.set_fault("latency", experiment_id=experiment["id"], method="PUT", latency_ms=800)
    secret = token_services.api_token_create(user=pm, name="release", scope=TokenScope.ACT).secret
    url = f"{server.url}/api/v1/workspaces/{workspace.pk}/experiments/{experiment['id']}/force-conclude"
    answers = race(url, secret, ["key-a", "key-b"])
    codes = sorted(answer.status_code for answer in answers)
    assert codes == [200, 409], [a.text[:300] for a in answers]
    loser = next(answer for answer in answers if answer.status_code == 409).json()
    winner = ConclusionAttempt.objects.get(state=AttemptState.SUCCEEDED)
    assert loser["attempt"] == f"/api/v1/attempts/{winner.pk}"
    assert len(standin.requests(method="PUT", path_contains=experiment["id"])) == 1


def test_one_key_sent_twice_at_once_acts_once(server, standin, workspace, pm):
    experiment = standin.find(1001, status="active")
    standin.set_fault("latency", experiment_id=experiment["id"], method="PUT", latency_ms=800)
    secret = token_services.api_token_create(user=pm, name="release", scope=TokenScope.ACT).secret
    url = f"{server.url}/api/v1/workspaces/{workspace.pk}/experiments/{experiment['id']}/force-conclude"
    answers = race(url, secret, ["same-key", "same-key"])
    # One acts; the other is told the first is still being answered (or, if it came after,
    # gets the first answer back).
    assert sorted(answer.status_code for answer in answers) in ([200, 409], [200, 200])
    assert len(standin.requests(method="PUT", path_contains=experiment["id"])) == 1
    assert ConclusionAttempt.objects.count() == 1
    again = requests.post(
        url,
        json={"reason": "From two release scripts at once."},
        headers={"Authorization": f"Bearer {secret}", "Idempotency-Key": "same-key"},
        timeout=60,
    )
    assert again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert len(standin.requests(method="PUT", path_contains=experiment["id"])) == 1
