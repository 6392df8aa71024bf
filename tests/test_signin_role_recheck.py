"""Someone removed from an identity-provider group loses the role mid-session, not at their
next sign-in: with the sign-in proxy on the first request whose groups header changed, with
SSO when the session is re-checked with the provider (its refresh token)."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from experiments.models import AuditEntry, EntryKind, GroupRule, Membership, Role, Workspace
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
