"""Shared fixtures: personas, workspaces, and the audit triggers' test hygiene."""

from __future__ import annotations

import socket

import pytest
from django.contrib.auth.models import Permission
from django.core.cache import cache

from experiments import db_triggers
from experiments.mixpanel.client import reset_clients
from experiments.models import Membership, Region, Role, Workspace
from experiments.notifications import webhook_address


@pytest.fixture(autouse=True, scope="session")
def _fast_password_hashing():
    # PBKDF2 at production strength costs about a second per user on these machines;
    # tests check who may do what, not how passwords are stored.
    from django.conf import settings

    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _clear_cache():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture(autouse=True)
def _audit_triggers_allow_flush(request):
    """Transactional tests end with a flush, which the append-only triggers refuse.

    For those tests only: make sure the triggers are in place while the test runs,
    then lift them just before pytest-django flushes the tables.
    """
    names = request.fixturenames
    marker = request.node.get_closest_marker("django_db")
    transactional = (
        "transactional_db" in names
        or "live_server" in names
        or (marker is not None and marker.kwargs.get("transaction", False))
    )
    if not transactional:
        yield
        return
    request.getfixturevalue("transactional_db")
    from django.db import connection

    db_triggers.install(connection)
    yield
    db_triggers.drop(connection)


@pytest.fixture
def workspace(db) -> Workspace:
    return Workspace.objects.create(name="Growth", region=Region.US, mixpanel_workspace_id=1001, mixpanel_project_id=77)


@pytest.fixture
def other_workspace(db) -> Workspace:
    return Workspace.objects.create(name="Payments", region=Region.EU, mixpanel_workspace_id=2002)


def _user(django_user_model, username: str, **extra):
    return django_user_model.objects.create_user(
        username=username, password="pw-" + username, first_name=username.title(), **extra
    )


@pytest.fixture
def pm(django_user_model, workspace):
    """A product manager who may force conclude in `workspace`."""
    user = _user(django_user_model, "pat")
    Membership.objects.create(user=user, workspace=workspace, role=Role.CONCLUDER)
    return user


@pytest.fixture
def second(django_user_model, workspace):
    """Quinn, another concluder of `workspace`: who approves Pat's requests."""
    user = _user(django_user_model, "quinn")
    Membership.objects.create(user=user, workspace=workspace, role=Role.CONCLUDER)
    return user


@pytest.fixture
def approving(workspace):
    """`workspace`, where a press of Force conclude needs a second person's approval."""
    from tests.factories import workspace_settings_set

    return workspace_settings_set(workspace, requires_approval=True)


@pytest.fixture
def teammate(django_user_model, workspace):
    """A viewer of `workspace`."""
    user = _user(django_user_model, "tess")
    Membership.objects.create(user=user, workspace=workspace, role=Role.VIEWER)
    return user


@pytest.fixture
def ws_admin(django_user_model, workspace):
    user = _user(django_user_model, "ada")
    Membership.objects.create(user=user, workspace=workspace, role=Role.ADMIN)
    return user


@pytest.fixture
def outsider(django_user_model, other_workspace):
    """A member of another workspace only."""
    user = _user(django_user_model, "otto")
    Membership.objects.create(user=user, workspace=other_workspace, role=Role.ADMIN)
    return user


@pytest.fixture
def auditor(django_user_model):
    """No membership, but may review every workspace's conclusions."""
    user = _user(django_user_model, "aud")
    user.user_permissions.add(Permission.objects.get(codename="review_all_conclusions"))
    return user


@pytest.fixture
def pm_client(client, pm):
    client.force_login(pm)
    return client


# --- The local Mixpanel stand-in (issue 3) -------------------------------------------
@pytest.fixture(scope="session")
def standin_server():
    """One stand-in HTTP server for the whole test session (port 0: a free port)."""
    from experiments.standin import StandIn

    server = StandIn(port=0, experiments_per_workspace=48, seed=1).start()
    yield server
    server.stop()


@pytest.fixture
def standin(standin_server, settings):
    """The stand-in, reset to its seeded state, with the dashboard pointed at it.

    Sets settings.MIXPANEL_API_BASE_URL to standin.url and short client timeouts
    (deadline 3 s, read timeout 2 s, retry waits capped at 0.05 s) so fault tests
    are quick. Workspaces: 1001 Growth (us; matches the `workspace` fixture),
    2002 Payments (eu; matches `other_workspace`), 3003 Search & Discovery (in);
    48 experiments each, every status, awkward names; Growth holds "[demo fault]"
    rows. Useful calls (see experiments.standin.server.StandIn):

        exp = standin.find(1001, status="active")        # a plain active experiment (dict)
        standin.experiment(1001, exp["id"])["status"]    # state after the test acted
        standin.set_fault("server_error", experiment_id=exp["id"], method="PUT", times=1)
        standin.set_fault("latency", latency_ms=300)      # every call, this test only
        standin.requests(method="PUT", path_contains=exp["id"])  # count upstream calls
        standin.set_access(1001, allowed=False)           # 403 for that workspace
        standin.add_experiment(1001, name="<b>x</b>", status="active")
    """

    standin_server.reset()
    reset_clients()
    settings.MIXPANEL_API_BASE_URL = standin_server.url
    settings.MIXPANEL_DEADLINE = 3.0
    settings.MIXPANEL_WRITE_DEADLINE = 3.0
    settings.MIXPANEL_READ_TIMEOUT = 2.0
    settings.MIXPANEL_CONNECT_TIMEOUT = 1.0
    settings.MIXPANEL_RETRY_AFTER_CAP = 0.05
    yield standin_server
    standin_server.reset()


# --- A real OpenID Connect provider on a loopback port -----------------------------
@pytest.fixture(scope="session")
def oidc_provider_server():
    """One test identity provider for the session (127.0.0.1, a port chosen at start)."""
    from tests.oidc_provider import LoopbackProvider

    provider = LoopbackProvider().start()
    yield provider
    provider.stop()


@pytest.fixture
def oidc_provider(oidc_provider_server, settings, monkeypatch):
    """The test provider, with the dashboard configured for it through settings and the
    environment exactly as OIDC_ISSUER_URL / OIDC_CLIENT_ID / OIDC_CLIENT_SECRET would."""
    from experiments.signin import oidc

    provider = oidc_provider_server
    provider.reset()
    settings.OIDC_ISSUER_URL = provider.url
    settings.OIDC_CLIENT_ID = provider.client_id
    settings.OIDC_RP_CLIENT_ID = provider.client_id
    settings.OIDC_GROUPS_CLAIM = "groups"
    settings.OIDC_AUDITOR_GROUPS = ["auditors"]
    monkeypatch.setenv("OIDC_CLIENT_SECRET", provider.client_secret)
    monkeypatch.delenv("OIDC_CLIENT_SECRET_FILE", raising=False)
    oidc.forget_provider_config()
    yield provider
    oidc.forget_provider_config()


# --- A local webhook receiver (notifications) ------------------------------------------
@pytest.fixture(scope="session")
def webhook_receiver_server():
    """One webhook receiver for the session (127.0.0.1, a port chosen at start)."""
    from tests.webhook_receiver import WebhookReceiver

    receiver = WebhookReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture
def webhook_receiver(webhook_receiver_server, settings):
    """The receiver with nothing received, answering 200 (`answer_with(500)`, `delay`).

    It listens on 127.0.0.1, which webhooks may only reach when the operator allows it: this
    fixture allows 127.0.0.0/8 as NOTIFY_WEBHOOK_ALLOW_NETWORKS would."""
    settings.NOTIFY_WEBHOOK_ALLOW_NETWORKS = ["127.0.0.0/8"]
    webhook_receiver_server.reset()
    yield webhook_receiver_server
    webhook_receiver_server.reset()


class FakeDNS:
    """The resolver every test uses instead of the system's, so no test needs the internet:
    names it was told about (`add`) resolve to their addresses, localhost to loopback, and any
    other name fails as an unknown one would. `lookups` lists the names asked for, in order."""

    def __init__(self) -> None:
        self.names: dict[str, list[str]] = {"localhost": ["127.0.0.1", "::1"]}
        self.lookups: list[str] = []

    def add(self, name: str, *addresses: str) -> None:
        self.names[name.lower()] = list(addresses)

    def __call__(self, host: str, port: int) -> list[str]:
        self.lookups.append(host)
        if host not in self.names:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return list(self.names[host])


@pytest.fixture(autouse=True)
def fake_dns(monkeypatch) -> FakeDNS:
    resolver = FakeDNS()
    monkeypatch.setattr(webhook_address, "lookup", resolver)
    return resolver
