"""seed_demo, bootstrap_dev, check_mixpanel and mixpanel_standin: what `make run` relies on."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
import requests
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client

from experiments.models import Membership, Region, Role, Workspace
from experiments.standin import DEMO_WORKSPACES

ROOT = Path(__file__).resolve().parent.parent
CANARY = "CANARY-s3cr3t-do-not-leak"


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue()


# --- seed_demo ---------------------------------------------------------------------------------------
@pytest.mark.django_db
def test_seed_demo_refuses_without_debug(settings):
    settings.DEBUG = False
    with pytest.raises(CommandError, match="DJANGO_DEBUG=1"):
        run("seed_demo")
    assert not get_user_model().objects.exists()
    assert not Workspace.objects.exists()


@pytest.mark.django_db
def test_seed_demo_creates_the_stand_ins_workspaces_and_logins(settings):
    settings.DEBUG = True
    output = run("seed_demo")
    seeded = {(w.mixpanel_workspace_id, w.name, w.region) for w in Workspace.objects.all()}
    assert seeded == {(d.mixpanel_workspace_id, d.name, d.region) for d in DEMO_WORKSPACES}
    users = {u.username: u for u in get_user_model().objects.all()}
    assert set(users) == {"concluder", "viewer", "admin", "auditor", "root"}
    roles = {(m.user.username, m.role) for m in Membership.objects.select_related("user")}
    assert roles == {
        (name, role) for name, role in (("concluder", Role.CONCLUDER), ("viewer", Role.VIEWER), ("admin", Role.ADMIN))
    }
    assert Membership.objects.filter(user__username="concluder").count() == len(DEMO_WORKSPACES)
    assert not Membership.objects.filter(user__username__in=["auditor", "root"]).exists()
    assert users["auditor"].has_perm("experiments.review_all_conclusions")
    assert not users["viewer"].has_perm("experiments.review_all_conclusions")
    assert [u for u, user in users.items() if user.is_superuser] == ["root"]
    # The printed table is true: each login works with its printed password.
    for username in users:
        match = re.search(rf"^\s+{username}\s+(\S+)", output, re.MULTILINE)
        assert match, f"{username} missing from the login table"
        assert Client().login(username=username, password=match.group(1))


@pytest.mark.django_db
def test_seed_demo_is_idempotent(settings):
    settings.DEBUG = True
    run("seed_demo")
    counts = (Workspace.objects.count(), get_user_model().objects.count(), Membership.objects.count())
    second = run("seed_demo")
    assert (Workspace.objects.count(), get_user_model().objects.count(), Membership.objects.count()) == counts
    assert "created" not in second.split("Demo logins")[0]
    assert "unchanged" in second


@pytest.mark.django_db
def test_seed_demo_turns_on_approval_in_one_workspace_once(settings):
    settings.DEBUG = True
    output = run("seed_demo")
    approving = Workspace.objects.filter(requires_approval=True).order_by("name")
    assert [(w.name, w.approval_policy) for w in approving] == [("Payments", "risky"), ("Search & Discovery", "always")]
    assert "Two-person approval is on in Payments (when risky), Search & Discovery (always)" in output
    # An admin turned it off: seeding again leaves their choice alone.
    Workspace.objects.update(requires_approval=False)
    run("seed_demo")
    assert not Workspace.objects.filter(requires_approval=True).exists()


@pytest.mark.django_db
def test_seed_demo_restores_a_demoted_or_changed_demo_user(settings):
    settings.DEBUG = True
    run("seed_demo")
    admin = get_user_model().objects.get(username="admin")
    admin.is_superuser = True
    admin.set_password("something else")
    admin.save()
    run("seed_demo")
    admin.refresh_from_db()
    assert not admin.is_superuser
    assert admin.check_password("demo-admin")


# --- bootstrap_dev -----------------------------------------------------------------------------------------
@pytest.mark.django_db
def test_bootstrap_dev_refuses_without_debug(settings):
    settings.DEBUG = False
    with pytest.raises(CommandError, match="DJANGO_DEBUG=1"):
        run("bootstrap_dev")
    assert not get_user_model().objects.exists()


@pytest.mark.django_db
def test_bootstrap_dev_creates_root_once_and_keeps_its_password(settings):
    settings.DEBUG = True
    output = run("bootstrap_dev")
    assert "root / demo-root" in output
    assert "No workspaces yet" in output
    root = get_user_model().objects.get(username="root")
    assert root.is_superuser
    assert root.check_password("demo-root")
    root.set_password("chosen-by-the-developer")
    root.save()
    assert "unchanged" in run("bootstrap_dev")
    root.refresh_from_db()
    assert root.check_password("chosen-by-the-developer")


# --- check_mixpanel against the stand-in ------------------------------------------------------------------
@pytest.fixture
def demo_workspaces(db):
    return [
        Workspace.objects.create(
            name=d.name, region=d.region, mixpanel_workspace_id=d.mixpanel_workspace_id, mixpanel_project_id=None
        )
        for d in DEMO_WORKSPACES
    ]


def test_check_mixpanel_reports_every_demo_workspace_reachable(standin, demo_workspaces):
    output = run("check_mixpanel")
    for workspace in demo_workspaces:
        row = next(line for line in output.splitlines() if line.startswith(workspace.name))
        assert re.search(r"\byes\s+48\b", row), row
    assert "All 3 workspace(s) reachable" in output
    assert len(standin.requests(method="GET")) == 3
    assert standin.requests(method="PUT") == []
    assert CANARY not in output


def test_check_mixpanel_fails_when_one_workspace_fails(standin, demo_workspaces, settings):
    settings.MIXPANEL_READ_RETRIES = 0
    standin.set_access(2002, allowed=False)
    standin.set_fault("server_error", workspace_id=3003)
    out = StringIO()
    with pytest.raises(CommandError, match="2 of 3") as caught:
        call_command("check_mixpanel", stdout=out)
    assert caught.value.returncode == 1
    lines = out.getvalue().splitlines()
    payments = next(line for line in lines if line.startswith("Payments"))
    assert " NO " in payments
    assert "no access to this workspace" in payments
    search = next(line for line in lines if line.startswith("Search & Discovery"))
    assert "server error (HTTP 500)" in search
    growth = next(line for line in lines if line.startswith("Growth"))
    assert " yes " in growth


def test_check_mixpanel_one_workspace(standin, demo_workspaces):
    output = run("check_mixpanel", "--workspace-id", "2002")
    assert "Payments" in output
    assert "Growth" not in output
    assert [r.path for r in standin.requests()] == ["/api/app/workspaces/2002/experiments"]


def test_check_mixpanel_unknown_workspace_id(standin, demo_workspaces):
    with pytest.raises(CommandError, match="No configured workspace"):
        run("check_mixpanel", "--workspace-id", "999")


@pytest.mark.django_db
def test_check_mixpanel_without_workspaces(standin):
    with pytest.raises(CommandError, match="add_workspace"):
        run("check_mixpanel")


def test_check_mixpanel_without_credentials(standin, demo_workspaces, monkeypatch):
    monkeypatch.delenv("MIXPANEL_SERVICE_ACCOUNT_SECRET")
    with pytest.raises(CommandError, match="MIXPANEL_SERVICE_ACCOUNT_SECRET"):
        run("check_mixpanel")
    assert standin.requests() == []


def test_check_mixpanel_with_a_dead_upstream(demo_workspaces, settings):
    settings.MIXPANEL_API_BASE_URL = "http://127.0.0.1:9/api/app"  # discard port: nothing listens
    settings.MIXPANEL_READ_RETRIES = 0
    out = StringIO()
    with pytest.raises(CommandError, match="3 of 3"):
        call_command("check_mixpanel", stdout=out)
    assert "could not be reached" in out.getvalue()


@pytest.mark.django_db
def test_check_mixpanel_after_seed_demo(standin, settings):
    settings.DEBUG = True
    run("seed_demo")
    assert "All 3 workspace(s) reachable" in run("check_mixpanel")
    assert Workspace.objects.get(mixpanel_workspace_id=1001).region == Region.US


# --- mixpanel_standin ------------------------------------------------------------------------------------------
def test_mixpanel_standin_refuses_without_credentials(monkeypatch):
    monkeypatch.delenv("MIXPANEL_SERVICE_ACCOUNT_USERNAME")
    with pytest.raises(CommandError, match="MIXPANEL_SERVICE_ACCOUNT_USERNAME"):
        run("mixpanel_standin", "--port", "0")


def test_mixpanel_standin_refuses_bad_numbers():
    with pytest.raises(CommandError, match="--experiments"):
        run("mixpanel_standin", "--port", "0", "--experiments", "-1")


def test_mixpanel_standin_serves_and_stops_on_sigterm():
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "DJANGO_SETTINGS_MODULE": "dashboard.settings"}
    process = subprocess.Popen(
        [sys.executable, "manage.py", "mixpanel_standin", "--port", "0", "--experiments", "7", "--quiet"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        first = process.stdout.readline()
        match = re.search(r"listening on (http://127\.0\.0\.1:\d+)", first)
        assert match, first
        base = match.group(1)
        response = requests.get(f"{base}/api/app/workspaces/1001/experiments", auth=("desk-test.sa", CANARY), timeout=5)
        assert response.status_code == 200
        assert len(response.json()["results"]) == 7
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)
        # Not communicate(): with a timeout it reads the pipe directly and loses what
        # readline() already buffered.
        output = process.stdout.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0
    assert "/_control/faults" in output
    assert "stopped" in output
    assert CANARY not in first + output
