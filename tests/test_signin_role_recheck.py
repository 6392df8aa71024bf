"""Someone removed from an identity-provider group loses the role mid-session, not at their
next sign-in: with the sign-in proxy on the first request whose groups header changed, with
SSO when the session is re-checked with the provider (its refresh token)."""

from __future__ import annotations

import logging
import time
from urllib.parse import urlparse

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from experiments.models import AuditEntry, EntryKind, GroupRule, Membership, Role, Workspace
from experiments.signin import oidc, recheck
from tests.fake_mixpanel import FakeMixpanel, install

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _mixpanel_fake(monkeypatch):
    """The home page reads each workspace's experiment list: from an empty fake here, never the network."""
    return install(monkeypatch, FakeMixpanel({}))


def settings_url(workspace) -> str:
    return reverse("experiments:workspace-settings", args=[workspace.pk])


SETTINGS_FORM = {"requires_approval": "1", "approval_window_hours": "24"}


# --- The sign-in proxy's groups header --------------------------------------------------------------
@pytest.fixture
def proxy_header(settings, workspace):
    settings.TRUSTED_USER_HEADER = "X-Auth-Request-User"
    settings.TRUSTED_GROUPS_HEADER = "X-Auth-Request-Groups"
    settings.TRUSTED_PROXIES = ["10.1.0.0/24"]
    settings.OIDC_AUDITOR_GROUPS = ["auditors"]
    GroupRule.objects.create(group="growth-admins", workspace=workspace, role=Role.ADMIN)


def _as_dan(groups: str | None) -> dict[str, str]:
    headers = {"REMOTE_ADDR": "10.1.0.5", "HTTP_X_AUTH_REQUEST_USER": "dan"}
    if groups is not None:
        headers["HTTP_X_AUTH_REQUEST_GROUPS"] = groups
    return headers


@pytest.mark.parametrize("groups_now", ["other-team", "", None], ids=["changed", "empty", "missing"])
def test_an_admin_removed_from_the_group_cannot_save_settings_on_the_next_request(
    client, proxy_header, workspace, groups_now
):
    assert client.get(settings_url(workspace), **_as_dan("growth-admins")).status_code == 200
    # The identity provider dropped Dan from growth-admins; the proxy says so on his next request.
    response = client.post(settings_url(workspace), SETTINGS_FORM, **_as_dan(groups_now))
    assert response.status_code == 404
    assert not Workspace.objects.get(pk=workspace.pk).requires_approval
    assert not Membership.objects.filter(user__username="dan").exists()
    removal = AuditEntry.objects.filter(kind=EntryKind.ROLE_CHANGED).latest("seq").payload_data
    assert (removal["role_before"], removal["role_after"], removal["source"]) == ("admin", "", "proxy header")
    # Same session: nobody signed Dan out.
    assert client.get("/", **_as_dan(groups_now)).wsgi_request.user.username == "dan"


def test_a_group_added_mid_session_grants_the_role_on_that_request(client, proxy_header, workspace):
    assert client.get(settings_url(workspace), **_as_dan("")).status_code == 404
    assert client.get(settings_url(workspace), **_as_dan("growth-admins")).status_code == 200


def test_an_unchanged_groups_header_does_not_sync_again(client, proxy_header, workspace):
    client.get("/", **_as_dan("growth-admins, x"))
    entries = AuditEntry.objects.count()
    with CaptureQueriesContext(connection) as queries:
        client.get(settings_url(workspace), **_as_dan("x,growth-admins"))  # the same groups, reordered
    assert AuditEntry.objects.count() == entries
    assert not any("experiments_grouprule" in query["sql"] for query in queries.captured_queries)


# --- SSO: the re-check with the provider ---------------------------------------------------------------
@pytest.fixture
def sso(oidc_provider, workspace):
    GroupRule.objects.create(group="growth-admins", workspace=workspace, role=Role.ADMIN)
    oidc_provider.add_person("alice", sub="a-1", email="alice@example.com", groups=["growth-admins"])
    return oidc_provider


def sso_sign_in(client, provider, username: str = "alice"):
    authorize_url = client.get(reverse("oidc_authentication_init"))["Location"]
    location = urlparse(provider.sign_in(authorize_url, username))
    response = client.get(f"{location.path}?{location.query}")
    assert response.status_code == 302, response.content.decode()[:500]
    return response


def make_due(client) -> None:
    """As if the ID token had expired: the session's re-check is due now."""
    session = client.session
    session[recheck.SSO_RECHECK_AT] = time.time() - 1
    session.save()


def test_an_sso_admin_removed_from_the_group_loses_the_role_at_the_re_check(client, sso, workspace):
    sso_sign_in(client, sso)
    assert client.get(settings_url(workspace)).status_code == 200
    sso.add_person("alice", sub="a-1", email="alice@example.com", groups=[])  # removed at the provider

    make_due(client)
    response = client.post(settings_url(workspace), SETTINGS_FORM)
    assert response.status_code == 404
    assert not Workspace.objects.get(pk=workspace.pk).requires_approval
    assert not Membership.objects.filter(user__username="alice").exists()
    assert sso.refreshes == 1
    removal = AuditEntry.objects.filter(kind=EntryKind.ROLE_CHANGED).latest("seq").payload_data
    assert (removal["role_before"], removal["role_after"], removal["source"]) == ("admin", "", "sso re-check")
    # The session goes on, without the role, until the next re-check.
    assert client.get("/").wsgi_request.user.username == "alice"
    assert client.session[recheck.SSO_RECHECK_AT] > time.time() + 200


def test_before_the_re_check_is_due_the_provider_is_not_asked(client, sso, workspace):
    sso_sign_in(client, sso)
    for _ in range(3):
        assert client.get(settings_url(workspace)).status_code == 200
    assert sso.refreshes == 0


@pytest.mark.parametrize(
    ("lifetime", "interval", "due_in"),
    [(300, 3600, 300), (7200, 3600, 3600), (7200, 600, 600)],
    ids=["id-token-expiry-first", "interval-first", "shorter-interval"],
)
def test_the_re_check_is_due_at_the_id_token_s_expiry_or_the_interval(
    client, sso, settings, lifetime, interval, due_in
):
    sso.id_token_lifetime = lifetime
    settings.OIDC_RECHECK_SECONDS = interval
    sso_sign_in(client, sso)
    assert client.session[recheck.SSO_RECHECK_AT] == pytest.approx(time.time() + due_in, abs=5)


def test_the_default_interval_is_at_most_an_hour(settings):
    assert settings.OIDC_RECHECK_SECONDS <= 3600


def test_a_person_removed_from_the_provider_is_signed_out_at_the_re_check(client, sso, caplog):
    sso_sign_in(client, sso)
    refresh_token = client.session[recheck.SSO_REFRESH_TOKEN]
    sso.remove_person("alice")
    make_due(client)
    with caplog.at_level(logging.INFO):
        response = client.get("/", follow=True)
    assert response.redirect_chain[0][0] == reverse("login")
    assert recheck.MSG_SSO_RECHECK_FAILED in response.content.decode()
    assert not response.wsgi_request.user.is_authenticated
    assert "invalid_grant" in caplog.text
    assert refresh_token not in caplog.text
    assert refresh_token not in response.content.decode()


def test_without_a_refresh_token_the_session_ends_at_the_re_check(client, sso):
    sso.issue_refresh_tokens = False
    sso_sign_in(client, sso)
    assert client.get("/").status_code == 200
    make_due(client)
    assert client.get("/").url == reverse("login")
    assert sso.refreshes == 0


def test_an_unreachable_provider_at_the_re_check_ends_the_session(client, sso, settings):
    sso_sign_in(client, sso)
    make_due(client)
    oidc.forget_provider_config()
    settings.OIDC_ISSUER_URL = "http://127.0.0.1:9"  # nothing listens: the provider cannot confirm anything
    assert client.get("/").url == reverse("login")


def test_a_refreshed_token_for_another_subject_ends_the_session(client, sso):
    sso_sign_in(client, sso)
    sso.spoil(sub="someone-else")
    make_due(client)
    assert client.get("/").url == reverse("login")


def test_a_refreshed_token_with_the_same_groups_changes_nothing(client, sso, workspace):
    sso_sign_in(client, sso)
    entries = AuditEntry.objects.count()
    make_due(client)
    assert client.get(settings_url(workspace)).status_code == 200
    assert sso.refreshes == 1
    assert AuditEntry.objects.count() == entries


def test_a_group_granted_at_the_provider_arrives_at_the_re_check(client, sso, other_workspace):
    GroupRule.objects.create(group="payments", workspace=other_workspace, role=Role.ADMIN)
    sso_sign_in(client, sso)
    assert client.get(settings_url(other_workspace)).status_code == 404
    sso.add_person("alice", sub="a-1", email="alice@example.com", groups=["growth-admins", "payments"])
    make_due(client)
    assert client.get(settings_url(other_workspace)).status_code == 200


def test_password_sessions_are_never_re_checked(pm_client, oidc_provider):
    session = pm_client.session
    session[recheck.SSO_RECHECK_AT] = time.time() - 1
    session.save()
    assert pm_client.get("/").status_code == 200
    assert oidc_provider.refreshes == 0
