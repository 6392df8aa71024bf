"""Foundation: login everywhere, health check, workspace visibility, CSP, settings."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.urls import reverse

from tests.fake_mixpanel import FakeMixpanel, install

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _mixpanel_fake(monkeypatch):
    """The home page reads each workspace's experiment list: from an empty fake here, never the network."""
    return install(monkeypatch, FakeMixpanel({}))


@pytest.mark.django_db
@pytest.mark.parametrize(
    "url",
    [
        "/",
        "/w/1/",
        "/w/1/experiments/abc/",
        "/w/1/bookmarks/",
        "/w/1/audit/",
        "/audit/",
        "/audit/1/",
        "/audit/export.csv",
        "/admin/",
    ],
)
def test_every_page_needs_login(client, url):
    response = client.get(url)
    assert response.status_code == 302
    assert "/login/" in response["Location"]


@pytest.mark.django_db
def test_login_page_is_public_and_styled(client):
    response = client.get(reverse("login"))
    assert response.status_code == 200
    assert b'<label for="id_username">' in response.content
    assert b"css/app.css" in response.content


@pytest.mark.django_db
def test_login_then_home_lists_own_workspaces_only(client, pm, workspace, other_workspace):
    response = client.post(reverse("login"), {"username": "pat", "password": "pw-pat"})
    assert response.status_code == 302
    page = client.get("/").content.decode()
    assert "Growth" in page
    assert "Payments" not in page
    assert "You are concluder" in page


@pytest.mark.django_db
def test_home_without_workspaces_says_whom_to_ask(client, django_user_model, ws_admin, settings):
    settings.DESK_ACCESS_CONTACT = "desk-access@example.com"
    client.force_login(django_user_model.objects.create_user(username="newcomer"))
    page = client.get("/").content.decode()
    assert "desk-access@example.com" in page
    assert "Ada" not in page
    assert "manage.py" not in page


@pytest.mark.django_db
def test_superuser_sees_every_workspace(client, django_user_model, workspace, other_workspace):
    root = django_user_model.objects.create_superuser("root", password="x")
    client.force_login(root)
    page = client.get("/").content.decode()
    assert "Growth" in page
    assert "Payments" in page


@pytest.mark.django_db
def test_healthz_is_public_json(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_outsider_gets_404_on_another_workspace(client, outsider, workspace):
    client.force_login(outsider)
    for name in ("experiment-list", "bookmark-list", "audit-workspace-list"):
        assert client.get(reverse(f"experiments:{name}", args=[workspace.pk])).status_code == 404


@pytest.mark.django_db
def test_unknown_workspace_is_404(pm_client):
    assert pm_client.get("/w/999999/").status_code == 404


@pytest.mark.django_db
def test_each_role_sees_the_workspace(client, pm, teammate, ws_admin, workspace):
    for user in (pm, teammate, ws_admin):
        client.force_login(user)
        page = client.get("/").content.decode()
        assert "Growth" in page, user


@pytest.mark.django_db
def test_csp_enforced_and_every_script_has_the_nonce(client):
    response = client.get(reverse("login"))
    policy = response["Content-Security-Policy"]
    assert "Content-Security-Policy-Report-Only" not in response
    nonce = re.search(r"'nonce-([^']+)'", policy).group(1)
    assert "script-src 'self' 'nonce-" in policy
    scripts = re.findall(r"<script\b[^>]*>", response.content.decode())
    assert len(scripts) >= 2  # htmx and our own
    for tag in scripts:
        assert f'nonce="{nonce}"' in tag, tag


@pytest.mark.django_db
def test_htmx_is_served_by_the_app_not_a_cdn(client):
    page = client.get(reverse("login")).content.decode()
    assert "/static/django_htmx/htmx-2" in page
    assert "unpkg" not in page
    assert "jsdelivr" not in page


@pytest.mark.django_db
def test_csrf_token_in_hx_headers(pm_client):
    page = pm_client.get("/").content.decode()
    assert re.search(r"<body hx-headers='\{\"X-CSRFToken\": \"[^\"]+\"\}'>", page)


def _manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_URL"))}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_check_deploy_is_clean_with_production_settings():
    result = _manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        DJANGO_DEBUG="0",
        DJANGO_SECRET_KEY="a-long-random-production-secret-key-" + "x" * 40,
        DJANGO_ALLOWED_HOSTS="desk.example.com",
    )
    assert result.returncode == 0, result.stderr + result.stdout
    assert "no issues" in result.stdout


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"DJANGO_DEBUG": "maybe"}, "DJANGO_DEBUG"),
        ({"DJANGO_DEBUG": "0"}, "DJANGO_SECRET_KEY"),
        ({"DJANGO_DEBUG": "1", "MIXPANEL_READ_TIMEOUT": "soon"}, "MIXPANEL_READ_TIMEOUT"),
        ({"DJANGO_DEBUG": "1", "DATABASE_URL": "nosuchdb://x"}, "DATABASE_URL"),
    ],
)
def test_malformed_environment_stops_startup_naming_the_variable(env, named):
    result = _manage("check", **env)
    assert result.returncode != 0
    assert named in result.stderr


@pytest.mark.django_db
def test_audit_nav_is_marked_current_on_the_list_and_an_attempt(pm_client, pm, workspace):
    from tests.factories import make_attempt

    attempt = make_attempt(workspace=workspace, actor=pm)
    for url in (reverse("experiments:audit-list"), attempt.get_absolute_url()):
        assert 'aria-current="page">Audit</a>' in pm_client.get(url).content.decode(), url
    assert 'aria-current="page">Audit</a>' not in pm_client.get("/").content.decode()
