"""Shared fixtures: personas, workspaces, and the audit triggers' test hygiene."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.core.cache import cache

from experiments import db_triggers
from experiments.models import Membership, Region, Role, Workspace


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
