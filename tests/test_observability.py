"""Request ids, JSON log lines, readiness, and what never reaches a log line."""

from __future__ import annotations

import io
import json
import logging
import os

import pytest
from django.core.cache import cache
from django.db import DatabaseError
from django.test import override_settings
from django.urls import reverse
from pythonjsonlogger.json import JsonFormatter

from experiments import observability
from experiments.mixpanel.errors import MixpanelUnavailable
from experiments.selectors import health

CANARY = os.environ["MIXPANEL_SERVICE_ACCOUNT_SECRET"]
SECRET_KEY = os.environ["DJANGO_SECRET_KEY"]


@pytest.fixture
def json_lines(settings):
    """Log lines as production writes them: the settings' JSON formatter and context filter on the root logger."""
    options = {k: v for k, v in settings.LOGGING["formatters"]["json"].items() if k != "()"}
    # A request an earlier test left unfinished (a streamed answer never read to the end)
    # leaves its request id in this thread's context; start from none.
    observability._clear_context()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter(**options))
    handler.addFilter(observability.RequestContextFilter())
    root = logging.getLogger()
    previous_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)

    def lines() -> list[dict]:
        return [json.loads(line) for line in stream.getvalue().splitlines()]

    lines.text = stream.getvalue  # the raw text, for leak checks
    yield lines
    root.removeHandler(handler)
    root.setLevel(previous_level)


def request_lines(lines: list[dict]) -> list[dict]:
    return [line for line in lines if line["logger"] == "dashboard.request"]


def test_production_logs_are_json_by_default(settings):
    # Tests run with debug off, as production does, and do not set DJANGO_LOG_JSON.
    assert not settings.DEBUG
    assert settings.LOG_JSON
    assert settings.LOGGING["handlers"]["console"]["formatter"] == "json"
    assert settings.MIDDLEWARE[0] == "experiments.observability.RequestIdMiddleware"
    # Django's lines go through the root handler only: once each, in the same format.
    assert logging.getLogger("django").handlers == []
    assert logging.getLogger("django").propagate


# --- request ids -------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_request_id_is_made_when_the_proxy_sends_none(client):
    response = client.get("/healthz")
    request_id = response["X-Request-ID"]
    assert len(request_id) == 32
    assert int(request_id, 16) >= 0
    assert client.get("/healthz")["X-Request-ID"] != request_id


@pytest.mark.django_db
def test_a_sane_request_id_from_the_proxy_is_kept(client):
    response = client.get("/healthz", headers={"X-Request-ID": "lb-7f3a.2026:abc_DEF-1"})
    assert response["X-Request-ID"] == "lb-7f3a.2026:abc_DEF-1"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "incoming",
    ["", "a" * 129, "has space", "<script>alert(1)</script>", 'quote"d', "-leading-dash", "new\\nline", "ü-nicode"],
)
def test_an_odd_request_id_is_replaced(client, incoming):
    response = client.get("/healthz", headers={"X-Request-ID": incoming})
    assert response["X-Request-ID"] != incoming
    assert len(response["X-Request-ID"]) == 32


def test_request_id_rule():
    assert observability.sane_request_id("A" * 128) == "A" * 128
    assert observability.sane_request_id("A" * 129) != "A" * 129
    assert observability.sane_request_id(None) != observability.sane_request_id(None)


# --- one JSON object per line ------------------------------------------------------------


@pytest.mark.django_db
def test_each_request_logs_one_json_line_with_its_context(pm_client, pm, workspace, json_lines, monkeypatch):
    from tests.fake_mixpanel import FakeMixpanel, install

    install(monkeypatch, FakeMixpanel())
    url = reverse("experiments:experiment-list", args=[workspace.pk])
    response = pm_client.get(url, headers={"X-Request-ID": "req-123"})
    assert response.status_code == 200

    (line,) = request_lines(json_lines())
    assert line["request_id"] == "req-123"
    assert line["user"] == pm.username
    assert line["workspace"] == workspace.pk
    assert line["path"] == url
    assert line["method"] == "GET"
    assert line["status"] == 200
    assert isinstance(line["duration_ms"], float)
    assert line["level"] == "INFO"
    assert line["time"].startswith("20")
    assert "attempt_id" in line


@pytest.mark.django_db
def test_the_attempt_id_is_on_the_lines_of_an_attempt_page(client, auditor, json_lines, workspace, pm):
    from tests.fake_mixpanel import FakeMixpanel
    from tests.test_reconcile import press

    attempt = press(workspace, pm, FakeMixpanel()).attempt
    client.force_login(auditor)
    assert client.get(reverse("experiments:audit-detail", args=[attempt.pk])).status_code == 200
    (line,) = request_lines(json_lines())
    assert line["attempt_id"] == attempt.pk


@pytest.mark.django_db
def test_django_s_own_4xx_line_carries_the_request_id_and_nothing_lingers_after(client, json_lines):
    client.get("/no/such/page/", headers={"X-Request-ID": "nf-1"})
    logging.getLogger("experiments").warning("between requests")
    lines = json_lines()
    not_found = next(line for line in lines if line["logger"] == "django.request")
    assert (not_found["message"], not_found["request_id"], not_found["status_code"]) == (
        "Not Found: /no/such/page/",
        "nf-1",
        404,
    )
    assert lines[-1]["message"] == "between requests"
    assert lines[-1]["request_id"] is None
    assert lines[-1]["path"] is None


@pytest.mark.django_db
def test_lines_logged_by_a_view_carry_the_user_and_workspace(pm_client, pm, workspace, json_lines, monkeypatch):
    from tests.fake_mixpanel import FakeMixpanel, install

    fake = install(monkeypatch, FakeMixpanel())

    def failing_list(workspace_id):
        logging.getLogger("experiments.mixpanel").error("list failed for this test")
        raise MixpanelUnavailable()

    fake.list_experiments = failing_list
    pm_client.get(reverse("experiments:experiment-list", args=[workspace.pk]), headers={"X-Request-ID": "v-1"})
    line = next(line for line in json_lines() if line["message"] == "list failed for this test")
    assert (line["request_id"], line["user"], line["workspace"]) == ("v-1", pm.username, workspace.pk)


@pytest.mark.django_db
def test_probes_load_no_user(client, django_assert_num_queries, pm):
    client.force_login(pm)
    with django_assert_num_queries(0):
        assert client.get("/healthz").status_code == 200


@pytest.mark.django_db
def test_a_force_conclude_press_logs_its_attempt_id(pm_client, workspace, json_lines, monkeypatch):
    from django.utils import timezone

    from experiments.forms import datetime_local_value
    from experiments.models import ConclusionAttempt
    from tests.fake_mixpanel import EXP_ID, FakeMixpanel, install

    install(monkeypatch, FakeMixpanel())
    url = reverse("experiments:experiment-force-conclude", args=[workspace.pk, EXP_ID])
    form = {"reason_category": "business", "reason_text": "Done.", "end_date": datetime_local_value(timezone.now())}
    assert pm_client.post(url, form, headers={"HX-Request": "true"}).status_code == 200
    (line,) = request_lines(json_lines())
    assert line["attempt_id"] == ConclusionAttempt.objects.get().pk
    assert line["workspace"] == workspace.pk


def test_log_context_reaches_lines_logged_outside_a_request(json_lines):
    with observability.log_context(attempt_id=42):
        logging.getLogger("experiments.tasks").warning("left open")
    logging.getLogger("experiments.tasks").warning("after")
    # Only these two lines: a server thread of another test (live_server) may log meanwhile.
    first, second = [line for line in json_lines() if line["logger"] == "experiments.tasks"]
    assert (first["message"], first["attempt_id"], first["request_id"]) == ("left open", 42, None)
    assert second["attempt_id"] is None


@pytest.mark.django_db
def test_a_server_error_is_logged_as_json_with_its_request_id_and_no_request_object(client, json_lines):
    client.raise_request_exception = False
    with override_settings(ROOT_URLCONF="tests.error_urls"):
        response = client.get("/boom/", headers={"X-Request-ID": "boom-1"})
    assert response.status_code == 500
    error = next(line for line in json_lines() if line["logger"] == "django.request")
    assert error["level"] == "ERROR"
    assert error["request_id"] == "boom-1"
    assert "RuntimeError" in error["exc_info"]
    assert "request" not in error
    assert request_lines(json_lines())[0]["status"] == 500


@pytest.mark.django_db
def test_secrets_never_reach_the_log(client, standin, pm_client, workspace, json_lines):
    standin.set_fault("unauthorized")
    url = reverse("experiments:experiment-list", args=[workspace.pk])
    pm_client.get(url + f"?q={CANARY}", headers={"Authorization": f"Bearer {CANARY}", "X-Api-Key": CANARY})
    client.raise_request_exception = False
    with override_settings(ROOT_URLCONF="tests.error_urls"):
        client.get("/boom/", headers={"Authorization": f"Basic {CANARY}"})
    text = json_lines.text()
    assert "Mixpanel answered 401 to service account" in text  # the failure itself was logged, for operators
    assert CANARY not in text
    assert SECRET_KEY not in text


# --- readiness -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_readyz_is_200_when_database_migrations_and_cache_answer(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "migrations": "ok", "cache": "ok"}
    assert "no-cache" in response["Cache-Control"]


@pytest.mark.django_db
def test_readyz_is_503_when_the_database_fails(client, monkeypatch):
    class Broken:
        def cursor(self):
            raise DatabaseError("could not connect to server at db.internal:5432")

    monkeypatch.setattr(health, "connections", {"default": Broken()})
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {"status": "error", "database": "unreachable", "migrations": "unknown", "cache": "ok"}
    assert "db.internal" not in response.content.decode()


@pytest.mark.django_db
def test_readyz_is_503_when_the_cache_fails(client, monkeypatch):
    def refuse(*args, **kwargs):
        raise ConnectionError("Error 111 connecting to redis.internal:6379")

    monkeypatch.setattr(cache, "set", refuse)
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["cache"] == "unreachable"
    assert response.json()["database"] == "ok"


@pytest.mark.django_db
def test_readyz_is_503_when_a_migration_is_not_applied(client):
    from django.db import connection
    from django.db.migrations.recorder import MigrationRecorder

    # The newest migration: the one a deploy that forgot to migrate would lack.
    MigrationRecorder(connection).migration_qs.filter(app="experiments").order_by("-name").first().delete()
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["migrations"] == "pending"


@pytest.mark.django_db
def test_healthz_is_liveness_and_touches_no_database(client, django_assert_num_queries):
    with django_assert_num_queries(0):
        response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_probes_are_not_redirected_to_https(client, settings):
    settings.SECURE_SSL_REDIRECT = True
    assert client.get("/readyz").status_code == 200
    assert client.get("/healthz").status_code == 200
    assert client.get("/accounts/login/").status_code == 301
