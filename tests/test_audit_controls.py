"""The auditor sees the controls: settings changes in the audit list (their own view and filter)
and in both exports; "Approved by" on the attempts; every state with its badge."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest
from django.db import connection
from django.urls import reverse

from experiments.models import AttemptState, AuditEntry, EntryKind, Membership, Role
from experiments.selectors import audit_controls
from experiments.selectors.audit import AuditFilters
from experiments.services import approvals
from experiments.services import workspaces as workspace_services
from tests.fake_mixpanel import FakeMixpanel
from tests.test_services_force_conclude import conclude

pytestmark = pytest.mark.django_db

LIST = reverse("experiments:audit-list")
CSV_URL = reverse("experiments:audit-export", args=["csv"])
NDJSON_URL = reverse("experiments:audit-export", args=["ndjson"])


def change(workspace, user, **settings):
    values = {
        "webhook_url": "",
        "remove_webhook": False,
        "email_bookmarkers": workspace.email_bookmarkers,
        "requires_approval": workspace.requires_approval,
        "approval_window_hours": workspace.approval_window_hours,
        **settings,
    }
    return workspace_services.workspace_settings_update(workspace=workspace, user=user, **values)


def body(response) -> str:
    return b"".join(response.streaming_content).decode()


def test_settings_changes_are_their_own_view_of_the_audit_list(client, auditor, workspace, other_workspace, ws_admin):
    change(workspace, ws_admin, requires_approval=True)
    change(workspace, ws_admin, requires_approval=False, approval_window_hours=12)
    client.force_login(auditor)
    html = client.get(LIST, {"action": "controls"}).content.decode()
    assert '<option value="controls" selected>Settings, roles and tokens</option>' in html
    rows = re.findall(r"<tr>\s*<td data-label=\"When\">.*?</tr>", html, re.S)
    assert len(rows) == 2
    # Newest first: approval planned off (a loosening), by whom, in which workspace.
    assert "two-person approval turns off at" in rows[0]
    assert "approval window 24 h → 12 h" in rows[0]
    assert "loosened a safeguard" in rows[0]
    assert "Ada (ada)" in rows[0]
    assert "Growth" in rows[0]
    assert "two-person approval required" in rows[1]
    assert "loosened a safeguard" not in rows[1]
    # The attempts view does not mix them in.
    assert "two-person approval" not in client.get(LIST).content.decode()


def test_the_controls_view_takes_the_lists_filters(client, auditor, workspace, other_workspace, ws_admin, outsider):
    change(workspace, ws_admin, email_bookmarkers=True)
    change(other_workspace, outsider, email_bookmarkers=True)
    client.force_login(auditor)

    def shown(**params) -> list[str]:
        html = client.get(LIST, {"action": "controls", **params}).content.decode()
        return re.findall(r'<td data-label="Who" class="name">([^<]+)</td>', html)

    assert shown() == ["Otto (otto)", "Ada (ada)"]
    assert shown(workspace=workspace.pk) == ["Ada (ada)"]
    assert shown(person="otto") == ["Otto (otto)"]
    assert shown(person=str(ws_admin.pk)) == ["Ada (ada)"]
    assert shown(q="email on") == ["Otto (otto)", "Ada (ada)"]
    assert shown(q="nothing like this") == []
    assert shown(date_from="2999-01-01") == []


def test_members_see_only_their_workspaces_controls(client, workspace, other_workspace, ws_admin, outsider):
    change(workspace, ws_admin, email_bookmarkers=True)
    change(other_workspace, outsider, email_bookmarkers=True)
    client.force_login(ws_admin)
    html = client.get(LIST, {"action": "controls"}).content.decode()
    assert "Ada (ada)" in html
    assert "Otto (otto)" not in html
    rows = list(csv.DictReader(io.StringIO(body(client.get(CSV_URL, {"action": "controls"})))))
    assert [row["actor_name"] for row in rows] == ["Ada (ada)"]


def test_both_exports_carry_the_controls_with_seq_and_hash(client, auditor, workspace, django_user_model):
    evil = django_user_model.objects.create_user(username="eve", first_name="=HYPERLINK(1)")
    Membership.objects.create(user=evil, workspace=workspace, role=Role.ADMIN)
    change(workspace, evil, requires_approval=True)
    entry = AuditEntry.objects.get(kind=EntryKind.SETTINGS_CHANGED)
    client.force_login(auditor)
    response = client.get(CSV_URL, {"action": "controls"})
    assert re.fullmatch(r'attachment; filename="settings-audit-\d{8}-\d{6}\.csv"', response["Content-Disposition"])
    (row,) = csv.DictReader(io.StringIO(body(response)))
    assert row["seq"] == str(entry.seq)
    assert row["hash"] == entry.hash
    assert row["kind"] == "settings_changed"
    assert row["workspace"] == "Growth"
    assert row["changes"] == "two-person approval required"
    assert row["actor_name"] == "'=HYPERLINK(1) (eve)"  # made inert for spreadsheets
    assert json.loads(row["payload"])["settings"]["requires_approval"] is True
    assert row["created_at"].endswith("Z")
    (line,) = [json.loads(text) for text in body(client.get(NDJSON_URL, {"action": "controls"})).splitlines()]
    assert line["seq"] == entry.seq
    assert line["payload"]["changes"] == ["two-person approval required"]  # JSON, not a string
    assert line["actor_name"] == "=HYPERLINK(1) (eve)"


def test_the_controls_page_by_keyset_on_seq(client, auditor, workspace, ws_admin):
    for hours in (10, 11, 12, 13, 14):
        change(workspace, ws_admin, approval_window_hours=hours)
    page = audit_controls.audit_control_page(user=auditor, filters=AuditFilters(action="controls"), page_size=2)
    assert [c.changes[0] for c in page.rows] == ["approval window 13 h → 14 h", "approval window 12 h → 13 h"]
    older = audit_controls.audit_control_page(
        user=auditor, filters=AuditFilters(action="controls"), cursor=page.older_cursor, page_size=2
    )
    assert [c.changes[0] for c in older.rows] == ["approval window 11 h → 12 h", "approval window 10 h → 11 h"]
    back = audit_controls.audit_control_page(
        user=auditor, filters=AuditFilters(action="controls"), cursor=older.newer_cursor, page_size=2
    )
    assert [c.entry.seq for c in back.rows] == [c.entry.seq for c in page.rows]


@pytest.mark.skipif(connection.vendor != "sqlite", reason="reads SQLite's query plan; PostgreSQL plans by statistics")
def test_each_kind_of_control_is_read_through_its_index(auditor):
    entries = audit_controls._filtered(auditor, AuditFilters(action="controls"))
    query = entries.filter(kind=EntryKind.SETTINGS_CHANGED).order_by("-seq")[:51]
    sql, params = query.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN QUERY PLAN " + sql, params)
        plan = " ".join(str(row) for row in cursor.fetchall())
    assert "entry_kind_seq_idx" in plan


def test_the_attempts_list_says_who_approved(client, auditor, approving, pm, second):
    fake = FakeMixpanel()
    approved = conclude(approving, pm, fake).attempt
    approvals.attempt_review(attempt=approved, user=second, decision=approvals.APPROVE, note="Fine.", client=fake)
    rejected = conclude(approving, pm, fake).attempt
    approvals.attempt_review(attempt=rejected, user=second, decision=approvals.REJECT, note="No.", client=fake)
    client.force_login(auditor)
    html = client.get(LIST).content.decode()
    assert '<th scope="col">Approved by</th>' in html
    cells = re.findall(r'<td data-label="Approved by" class="name">(.*?)</td>', html, re.S)
    # Newest first: the rejection (nobody approved it), then the approval.
    assert "Quinn (quinn)" not in cells[0]
    assert "Quinn (quinn)" in cells[1]
    assert "Fine." in cells[1]


def test_every_state_has_a_badge_style():
    css = (Path(__file__).resolve().parent.parent / "static" / "css" / "app.css").read_text()
    for state in AttemptState.values:
        assert f".badge.outcome-{state}" in css, state


def test_role_grants_and_token_events_are_among_the_controls(client, auditor, pm, workspace):
    from experiments.models import Role, TokenScope
    from experiments.services import roles as role_services
    from experiments.services import tokens as token_services

    role_services.membership_set(user=pm, workspace=workspace, role=Role.ADMIN, actor=None, source="command")
    made = token_services.api_token_create(user=pm, name="release script", scope=TokenScope.ACT)
    token_services.api_token_revoke(token=made.token, by=pm)
    client.force_login(auditor)
    html = client.get(reverse("experiments:audit-list"), {"action": "controls"}).content.decode()
    assert "Pat (pat): concluder → admin in Growth (command)" in html
    assert "API token “release script” (act) of Pat (pat) made" in html
    assert "API token “release script” (act) of Pat (pat) revoked" in html
    assert made.secret not in html
    export = b"".join(
        client.get(reverse("experiments:audit-export", args=["csv"]), {"action": "controls"}).streaming_content
    )
    assert "concluder → admin in Growth" in export.decode()
