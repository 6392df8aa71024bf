"""/metrics and /readyz/worker in one process: who may scrape, what is counted, what is read."""

from __future__ import annotations

import datetime as dt

import pytest
from django.urls import reverse
from django.utils import timezone
from django_tasks_db.models import DBTaskResult
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import REGISTRY

from experiments.forms import datetime_local_value
from experiments.models import AttemptState, WorkerHeartbeat
from experiments.services import reconcile as reconcile_services
from tests.factories import make_attempt

pytestmark = pytest.mark.django_db

TOKEN = "metrics-token-for-these-tests-0123456789"


def counted(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def scrape(client, **extra) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics", **extra)
    assert response.status_code == 200, response.content[:300]
    assert response["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


# --- Who may scrape -----------------------------------------------------------------------


def test_loopback_may_scrape_without_signing_in(client):
    assert client.get("/metrics").status_code == 200  # the test client comes from 127.0.0.1


def test_another_address_is_refused(client):
    response = client.get("/metrics", REMOTE_ADDR="203.0.113.7")
    assert response.status_code == 403
    assert b"desk_" not in response.content


def test_a_forwarded_request_is_judged_by_its_client_not_by_the_proxy(client):
    """Behind a reverse proxy on the same host every request comes from loopback."""
    response = client.get("/metrics", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="198.51.100.4")
    assert response.status_code == 403


def test_the_token_opens_it_from_anywhere_and_a_wrong_one_does_not(client, settings):
    settings.METRICS_TOKEN = TOKEN
    elsewhere = {"REMOTE_ADDR": "203.0.113.7"}
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}", **elsewhere).status_code == 200
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}x", **elsewhere).status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Basic {TOKEN}", **elsewhere).status_code == 403


def test_no_token_is_set_so_none_is_accepted(client, settings):
    settings.METRICS_TOKEN = ""
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer ", REMOTE_ADDR="203.0.113.7").status_code == 403


def test_other_allowed_networks(client, settings):
    settings.METRICS_ALLOWED_NETWORKS = ["10.0.0.0/8"]
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 403


# --- What is counted ------------------------------------------------------------------------


def test_a_request_is_counted_by_route_name_method_and_status(client):
    before = counted("desk_http_requests_total", route="healthz", method="GET", status="200")
    timed = counted("desk_http_request_duration_seconds_count", route="healthz", method="GET")
    for _ in range(3):
        client.get("/healthz")
    assert counted("desk_http_requests_total", route="healthz", method="GET", status="200") == before + 3
    assert counted("desk_http_request_duration_seconds_count", route="healthz", method="GET") == timed + 3
    unmatched = counted("desk_http_requests_total", route="unmatched", method="GET", status="404")
    client.get("/no/such/page/0b9c4b8e-4a57")
    assert counted("desk_http_requests_total", route="unmatched", method="GET", status="404") == unmatched + 1


def test_mixpanel_calls_are_counted_by_operation_and_outcome(client, standin, workspace, pm):
    experiment = standin.find(1001, status="active")
    ok_get = counted("desk_mixpanel_calls_total", operation="get", outcome="ok")
    ok_put = counted("desk_mixpanel_calls_total", operation="force_conclude", outcome="ok")
    limited = counted("desk_mixpanel_calls_total", operation="list", outcome="429")
    list_bytes = counted("desk_mixpanel_list_bytes_total")
    client.force_login(pm)
    form = {
        "reason_category": "business",
        "reason_text": "Counted once.",
        "end_date": datetime_local_value(timezone.now()),
    }
    url = reverse("experiments:experiment-force-conclude", args=[workspace.pk, experiment["id"]])
    assert client.post(url, form, HTTP_HX_REQUEST="true").status_code == 200
    assert counted("desk_mixpanel_calls_total", operation="get", outcome="ok") == ok_get + 1
    assert counted("desk_mixpanel_calls_total", operation="force_conclude", outcome="ok") == ok_put + 1
    assert counted("desk_mixpanel_list_bytes_total") > list_bytes  # the dialog read the list first

    # A 429 on every try is one list call, counted once with its outcome, retries and all.
    standin.set_fault("rate_limit", workspace_id=1001, method="GET", retry_after=0)
    client.post(reverse("experiments:experiment-list-refresh", args=[workspace.pk]))
    assert counted("desk_mixpanel_calls_total", operation="list", outcome="429") == limited + 1


def test_reads_of_a_list_count_hits_misses_and_the_age_served(client, standin, workspace, pm):
    client.force_login(pm)
    misses = counted("desk_list_cache_requests_total", result="miss")
    hits = counted("desk_list_cache_requests_total", result="hit")
    ages = counted("desk_list_copy_age_seconds_count")
    url = reverse("experiments:experiment-list", args=[workspace.pk])
    client.get(url)
    client.get(url)
    assert counted("desk_list_cache_requests_total", result="miss") == misses + 1
    assert counted("desk_list_cache_requests_total", result="hit") == hits + 1
    assert counted("desk_list_copy_age_seconds_count") == ages + 2


def test_attempt_moves_are_counted_when_they_commit(client, standin, workspace, pm, django_capture_on_commit_callbacks):
    experiment = standin.find(1001, status="active")
    requested = counted("desk_attempt_moves_total", action="conclusion", state="requested")
    succeeded = counted("desk_attempt_moves_total", action="conclusion", state="succeeded")
    client.force_login(pm)
    form = {"reason_category": "business", "reason_text": "x", "end_date": datetime_local_value(timezone.now())}
    url = reverse("experiments:experiment-force-conclude", args=[workspace.pk, experiment["id"]])
    with django_capture_on_commit_callbacks(execute=True):
        client.post(url, form, HTTP_HX_REQUEST="true")
    assert counted("desk_attempt_moves_total", action="conclusion", state="requested") == requested + 1
    assert counted("desk_attempt_moves_total", action="conclusion", state="succeeded") == succeeded + 1


def test_no_label_carries_an_experiment_id_a_person_or_text_from_mixpanel(client, standin, workspace, pm):
    experiment = standin.find(1001, status="active")
    client.force_login(pm)
    client.get(reverse("experiments:experiment-detail", args=[workspace.pk, experiment["id"]]))
    client.get(reverse("experiments:experiment-list", args=[workspace.pk]) + "?q=" + experiment["name"][:10])
    client.logout()
    text = client.get("/metrics").content.decode()
    assert experiment["id"] not in text
    assert experiment["name"] not in text
    values = {value for _, labels in scrape(client) for _, value in labels}
    assert pm.username not in values
    assert not any(value.startswith("/") for value in values)  # routes by name, never by path


# --- What is read from the database at each scrape ---------------------------------------------


def test_waiting_attempts_tasks_and_heartbeats_are_read_at_the_scrape(client, workspace, pm):
    make_attempt(workspace=workspace, actor=pm, experiment_id="e-1", outcome=AttemptState.UNKNOWN)
    make_attempt(workspace=workspace, actor=pm, experiment_id="e-2", outcome=None)  # requested, no outcome
    old = make_attempt(workspace=workspace, actor=pm, experiment_id="e-3", outcome=AttemptState.UNKNOWN)
    type(old).objects.filter(pk=old.pk).update(created_at=timezone.now() - dt.timedelta(minutes=30))
    reconcile_services.reconcile_attempt.using(run_after=timezone.now() - dt.timedelta(minutes=2)).enqueue(old.pk)
    WorkerHeartbeat.objects.create(
        worker_id="w1", hostname="h", pid=1, started_at=timezone.now(), beat_at=timezone.now() - dt.timedelta(seconds=7)
    )
    samples = scrape(client)
    assert samples[("desk_attempts_waiting", (("action", "conclusion"), ("state", "unknown")))] == 2
    assert samples[("desk_attempts_waiting", (("action", "conclusion"), ("state", "requested")))] == 1
    assert 1790 <= samples[("desk_oldest_open_attempt_age_seconds", ())] <= 1900
    assert samples[("desk_tasks_due", ())] >= 1
    assert 110 <= samples[("desk_oldest_due_task_age_seconds", ())] <= 400
    assert 6 <= samples[("desk_worker_heartbeat_age_seconds", (("worker", "w1"),))] <= 60


def test_the_scrape_costs_a_fixed_number_of_queries(client, workspace, pm, django_assert_max_num_queries):
    for number in range(5):
        make_attempt(workspace=workspace, actor=pm, experiment_id=f"e-{number}", outcome=AttemptState.UNKNOWN)
    with django_assert_max_num_queries(10):
        scrape(client)


# --- /readyz/worker -------------------------------------------------------------------------------


def beat(seconds_ago: float) -> None:
    WorkerHeartbeat.objects.update_or_create(
        worker_id="w1",
        defaults={
            "hostname": "h",
            "pid": 1,
            "started_at": timezone.now(),
            "beat_at": timezone.now() - dt.timedelta(seconds=seconds_ago),
        },
    )


def readiness(client) -> tuple[int, dict]:
    response = client.get("/readyz/worker")
    return response.status_code, response.json()


def test_no_worker_ever_is_not_ready(client):
    assert readiness(client) == (503, {"status": "error", "heartbeat": "none", "queue": "ok"})


def test_a_recent_heartbeat_is_ready_and_a_stale_one_is_not(client, settings):
    settings.WORKER_STALE_SECONDS = 60
    beat(5)
    assert readiness(client) == (200, {"status": "ok", "heartbeat": "ok", "queue": "ok"})
    beat(61)
    assert readiness(client) == (503, {"status": "error", "heartbeat": "stale", "queue": "ok"})


def test_a_queue_falling_behind_is_not_ready_though_the_worker_beats(client, settings, workspace, pm):
    settings.WORKER_MAX_DELAY_SECONDS = 300
    beat(1)
    attempt = make_attempt(workspace=workspace, actor=pm, outcome=AttemptState.UNKNOWN)
    reconcile_services.reconcile_attempt.using(run_after=timezone.now() - dt.timedelta(seconds=200)).enqueue(attempt.pk)
    assert readiness(client)[0] == 200
    DBTaskResult.objects.update(run_after=timezone.now() - dt.timedelta(seconds=400))
    assert readiness(client) == (503, {"status": "error", "heartbeat": "ok", "queue": "behind"})


def test_readiness_needs_no_sign_in_and_is_never_cached(client):
    beat(1)
    response = client.get("/readyz/worker")
    assert response.status_code == 200
    assert "no-cache" in response["Cache-Control"] or "no-store" in response["Cache-Control"]
