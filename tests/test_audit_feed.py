"""bin/verify-feed: the audit feed verified from outside, with Python's standard library only."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection

from experiments import db_triggers
from experiments.models import AuditEntry, TokenScope
from experiments.services import tokens as token_services
from tests.factories import make_attempt

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def feed(live_server, auditor, workspace, pm):
    """A live dashboard with a few chained entries, and an auditor's read token."""
    for number in range(3):
        make_attempt(workspace=workspace, actor=pm, experiment_id=f"exp-{number}")
    secret = token_services.api_token_create(user=auditor, name="siem", scope=TokenScope.READ).secret
    return live_server.url, secret


def verify_feed(base_url: str, token: str, *extra: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(ROOT / "bin" / "verify-feed"), base_url, token, *extra]
    # A bare interpreter and environment: the script needs nothing of the project.
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin"}, cwd="/")


def lifted(statement: str, params: list) -> None:
    db_triggers.drop(connection)
    try:
        with connection.cursor() as cursor:
            cursor.execute(statement, params)
    finally:
        db_triggers.install(connection)


def test_a_real_feed_verifies_and_the_head_is_printed(feed):
    head = AuditEntry.objects.order_by("-seq").first()
    result = verify_feed(*feed)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Verified {head.seq} entries. Head: seq {head.seq}, hash {head.hash}" in result.stdout


def test_an_edited_entry_fails(feed):
    entry = AuditEntry.objects.order_by("seq")[2]
    lifted("UPDATE experiments_auditentry SET actor_name = %s WHERE id = %s", ["Mallory", entry.pk])
    result = verify_feed(*feed)
    assert result.returncode == 1
    assert f"seq {entry.seq} was changed" in result.stdout


def test_a_gap_fails(feed):
    entry = AuditEntry.objects.order_by("seq")[1]
    lifted("DELETE FROM experiments_auditentry WHERE id = %s", [entry.pk])
    result = verify_feed(*feed)
    assert result.returncode == 1
    assert f"seq {entry.seq} is missing" in result.stdout


def test_an_unknown_token_is_told_so(live_server, pm, workspace):
    bad = verify_feed(live_server.url, "edk_unknown")
    assert bad.returncode == 2
    assert "HTTP 401" in bad.stderr
