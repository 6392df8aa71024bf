"""Session limits, the trusted proxy header, group rules from the command line and the admin, newcomers."""

from __future__ import annotations

import logging
import re
import time
from io import StringIO

import pytest
from django.contrib.auth.models import Permission
from django.contrib.sessions.models import Session
from django.core.management import CommandError, call_command
from django.urls import reverse

from experiments.models import ExternalIdentity, GroupRule, Membership, Role, RoleChange
from experiments.signin.middleware import LAST_SEEN_AT, MSG_SESSION_ENDED, SIGNED_IN_AT
from tests.fake_mixpanel import FakeMixpanel, install

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _mixpanel_fake(monkeypatch):
    """The home page reads each workspace's experiment list: from an empty fake here, never the network."""
    return install(monkeypatch, FakeMixpanel({}))


def _age_session(client, **seconds_ago: float) -> None:
    session = client.session
    for key, ago in seconds_ago.items():
        session[{"signed_in": SIGNED_IN_AT, "last_seen": LAST_SEEN_AT}[key]] = time.time() - ago
    session.save()


# --- Sessions ------------------------------------------------------------------------------
def test_session_within_both_limits_goes_on(pm_client):
    _age_session(pm_client, signed_in=3600, last_seen=600)
    assert pm_client.get("/").status_code == 200


def test_idle_session_ends_after_the_idle_timeout(pm_client, settings):
    _age_session(pm_client, last_seen=settings.SESSION_IDLE_TIMEOUT + 5)
    response = pm_client.get("/", follow=True)
    assert response.redirect_chain[0][0].startswith(reverse("login"))
    assert MSG_SESSION_ENDED in response.content.decode()
    assert not Session.objects.exists()


def test_busy_session_still_ends_at_the_absolute_timeout(pm_client, settings):
    _age_session(pm_client, signed_in=settings.SESSION_ABSOLUTE_TIMEOUT + 5, last_seen=10)
    assert pm_client.get("/").status_code == 302
    assert not Session.objects.exists()


def test_idle_admin_session_ends_on_the_admin_site_too(admin_client, settings):
    _age_session(admin_client, last_seen=settings.SESSION_IDLE_TIMEOUT + 5)
    assert admin_client.get("/admin/").status_code == 302
    assert not Session.objects.exists()


def test_defaults_are_eight_hours_idle_and_seven_days_absolute(settings):
    assert settings.SESSION_IDLE_TIMEOUT == 8 * 3600
    assert settings.SESSION_ABSOLUTE_TIMEOUT == 7 * 24 * 3600
    assert settings.SESSION_COOKIE_AGE == settings.SESSION_ABSOLUTE_TIMEOUT


def test_sign_out_deletes_the_session_row_so_no_server_keeps_it(pm_client):
    key = pm_client.session.session_key
    assert Session.objects.filter(session_key=key).exists()
    pm_client.post(reverse("logout"))
    assert not Session.objects.filter(session_key=key).exists()


def test_last_seen_is_not_rewritten_on_every_request(pm_client):
    pm_client.get("/")
    before = pm_client.session[LAST_SEEN_AT]
    pm_client.get("/")
    assert pm_client.session[LAST_SEEN_AT] == before


# --- Trusted proxy header --------------------------------------------------------------------
@pytest.fixture
def proxy_header(settings):
    settings.TRUSTED_USER_HEADER = "X-Auth-Request-User"
    settings.TRUSTED_GROUPS_HEADER = "X-Auth-Request-Groups"
    settings.TRUSTED_PROXIES = ["10.1.0.0/24", "192.0.2.7"]
    settings.OIDC_AUDITOR_GROUPS = ["auditors"]


def test_header_from_the_proxy_signs_in_and_groups_feed_the_rules(client, proxy_header, workspace):
    GroupRule.objects.create(group="growth", workspace=workspace, role=Role.CONCLUDER)
    response = client.get(
        "/", REMOTE_ADDR="10.1.0.5", HTTP_X_AUTH_REQUEST_USER="carol@example.com", HTTP_X_AUTH_REQUEST_GROUPS="growth,x"
    )
    assert response.status_code == 200
    assert "Growth" in response.content.decode()
    user = ExternalIdentity.objects.get(subject="carol@example.com").user
    assert user.email == "carol@example.com"
    assert Membership.objects.get(user=user).granted_by_group == "growth"
    assert RoleChange.objects.get().source == "proxy header"


def test_header_from_anywhere_else_is_refused_and_logged(client, proxy_header, caplog):
    with caplog.at_level(logging.WARNING, logger="experiments.signin"):
        response = client.get("/", REMOTE_ADDR="203.0.113.9", HTTP_X_AUTH_REQUEST_USER="root")
    assert response.status_code == 403
    assert "did not come through the sign-in proxy" in response.content.decode()
    assert "203.0.113.9" in caplog.text
    assert not ExternalIdentity.objects.exists()


def test_header_is_ignored_entirely_when_not_configured(client, pm):
    response = client.get("/", REMOTE_ADDR="10.1.0.5", HTTP_REMOTE_USER="pat", HTTP_X_AUTH_REQUEST_USER="pat")
    assert response.status_code == 302  # to the login page: nobody signed in


def test_header_naming_a_local_password_account_is_refused(client, proxy_header, pm, caplog):
    with caplog.at_level(logging.WARNING, logger="experiments.signin"):
        response = client.get("/", REMOTE_ADDR="192.0.2.7", HTTP_X_AUTH_REQUEST_USER="pat")
    assert response.status_code == 302
    assert "local account" in caplog.text


def test_header_groups_change_between_sign_ins(client, proxy_header, workspace, other_workspace):
    GroupRule.objects.create(group="growth", workspace=workspace, role=Role.VIEWER)
    GroupRule.objects.create(group="pay", workspace=other_workspace, role=Role.ADMIN)
    headers = {"REMOTE_ADDR": "10.1.0.5", "HTTP_X_AUTH_REQUEST_USER": "dan"}
    client.get("/", **headers, HTTP_X_AUTH_REQUEST_GROUPS="growth")
    client.post(reverse("logout"), **headers)
    client.get("/", **headers, HTTP_X_AUTH_REQUEST_GROUPS="pay")
    user = ExternalIdentity.objects.get(subject="dan").user
    assert [(m.workspace.name, m.role) for m in Membership.objects.filter(user=user)] == [("Payments", "admin")]


# --- Rules by hand stay, rules from the command line and the admin ----------------------------
def test_hand_added_membership_survives_sign_in_without_the_group(workspace, django_user_model):
    from experiments.services.signin import roles_sync_from_groups

    user = django_user_model.objects.create_user(username="erin")
    Membership.objects.create(user=user, workspace=workspace, role=Role.ADMIN)
    GroupRule.objects.create(group="growth", workspace=workspace, role=Role.VIEWER)
    assert roles_sync_from_groups(user=user, groups=[], source="sso", auditor_groups=[]) == 0
    assert roles_sync_from_groups(user=user, groups=["growth"], source="sso", auditor_groups=[]) == 0
    assert Membership.objects.get(user=user).role == Role.ADMIN
    assert not RoleChange.objects.exists()


def test_highest_role_wins_when_two_groups_grant_the_same_workspace(workspace, django_user_model):
    from experiments.services.signin import roles_sync_from_groups

    user = django_user_model.objects.create_user(username="fay")
    GroupRule.objects.create(group="a", workspace=workspace, role=Role.VIEWER)
    GroupRule.objects.create(group="b", workspace=workspace, role=Role.CONCLUDER)
    roles_sync_from_groups(user=user, groups=["a", "b"], source="sso", auditor_groups=[])
    membership = Membership.objects.get(user=user)
    assert (membership.role, membership.granted_by_group) == (Role.CONCLUDER, "b")
    roles_sync_from_groups(user=user, groups=["a"], source="sso", auditor_groups=[])
    change = RoleChange.objects.latest("id")
    assert (change.action, change.previous_role, change.role, change.group) == ("changed", "concluder", "viewer", "a")


def test_add_member_group_makes_and_updates_a_rule(workspace):
    out = StringIO()
    call_command("add_member", "--group", "growth-pms", "--workspace-id", "1001", "--role", "concluder", stdout=out)
    assert "Members of group 'growth-pms' get concluder of Growth" in out.getvalue()
    call_command("add_member", "--group", "growth-pms", "--workspace-id", "1001", "--role", "admin", stdout=out)
    assert GroupRule.objects.get(group="growth-pms", workspace=workspace).role == Role.ADMIN
    assert "(changed)" in out.getvalue()


def test_add_member_needs_exactly_one_of_user_and_group(workspace):
    with pytest.raises(CommandError):
        call_command("add_member", "--workspace-id", "1001", "--role", "viewer")
    with pytest.raises(CommandError):
        call_command("add_member", "--user", "x", "--group", "g", "--workspace-id", "1001", "--role", "viewer")


def test_admin_can_edit_rules_and_read_role_changes(admin_client, workspace):
    response = admin_client.post(
        reverse("admin:experiments_grouprule_add"), {"group": "growth", "workspace": workspace.pk, "role": "viewer"}
    )
    assert response.status_code == 302
    assert GroupRule.objects.filter(group="growth").exists()
    RoleChange.objects.create(
        user_name="Alice", workspace=workspace, workspace_name="Growth", action="added", role="viewer",
        group="growth", source="sso",
    )  # fmt: skip
    page = admin_client.get(reverse("admin:experiments_rolechange_changelist")).content.decode()
    assert "Alice" in page
    assert "growth" in page
    assert admin_client.get(reverse("admin:experiments_rolechange_add")).status_code == 403


# --- Newcomers and auditors --------------------------------------------------------------------
def test_auditor_without_workspace_lands_on_the_audit_trail(client, auditor):
    client.force_login(auditor)
    assert client.get("/").url == reverse("experiments:audit-list")


@pytest.fixture
def newcomer_client(client, django_user_model, workspace, other_workspace):
    """Signed in with no role anywhere, while two workspaces have admins with e-mail addresses."""
    for username, ws in (("ada", workspace), ("pia", other_workspace)):
        admin = django_user_model.objects.create_user(
            username=username, first_name=username.title(), email=f"{username}@example.com"
        )
        Membership.objects.create(user=admin, workspace=ws, role=Role.ADMIN)
    client.force_login(django_user_model.objects.create_user(username="newbie", email="newbie@example.com"))
    return client


def test_newcomer_page_names_no_workspace_and_no_one_s_e_mail(newcomer_client, settings):
    settings.DESK_ACCESS_CONTACT = ""
    page = newcomer_client.get("/").content.decode()
    assert "No workspaces yet" in page
    for secret in ("Growth", "Payments", "ada@example.com", "pia@example.com", "Ada", "Pia", "mailto:"):
        assert secret not in page, secret
    assert "ask the person who runs Experiment Desk for your company" in page


@pytest.mark.parametrize(
    ("contact", "shown"),
    [
        ("desk-access@example.com", '<a href="mailto:desk-access@example.com">desk-access@example.com</a>'),
        (
            "https://help.example.com/desk?team=growth&x=1",
            '<a href="https://help.example.com/desk?team=growth&amp;x=1">https://help.example.com/desk?team=growth&amp;x=1</a>',
        ),
        (
            "Ask in #experiment-desk on Slack <or the data team>.",
            "Ask in #experiment-desk on Slack &lt;or the data team&gt;.",
        ),
    ],
    ids=["address", "url", "sentence"],
)
def test_newcomer_page_shows_the_configured_contact(newcomer_client, settings, contact, shown):
    settings.DESK_ACCESS_CONTACT = contact
    page = newcomer_client.get("/").content.decode()
    assert shown in page
    for secret in ("Growth", "Payments", "ada@example.com", "pia@example.com"):
        assert secret not in page, secret


def test_newcomer_page_links_lead_nowhere_that_is_404(newcomer_client, settings):
    settings.DESK_ACCESS_CONTACT = "desk-access@example.com"
    page = newcomer_client.get("/").content.decode()
    assert "python manage.py" not in page
    for href in set(re.findall(r'href="(/[^"]*)"', page)):
        assert newcomer_client.get(href).status_code in (200, 302), href


def test_auditor_pages_links_lead_nowhere_that_is_404(client, auditor):
    auditor.user_permissions.add(Permission.objects.get(codename="review_all_conclusions"))
    client.force_login(auditor)
    page = client.get(reverse("experiments:audit-list")).content.decode()
    for href in set(re.findall(r'href="(/[^"?]*)"', page)):
        assert client.get(href).status_code in (200, 302), href
