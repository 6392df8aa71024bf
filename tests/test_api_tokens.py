"""Personal API tokens: the account page, the command and the admin's revoke."""

from __future__ import annotations

import datetime as dt
import io

import pytest
from django.contrib.auth.models import Permission
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

from experiments.models import ApiToken, AuditEntry, EntryKind, TokenScope
from experiments.services import tokens as token_services
from tests.factories import assert_chain_valid

pytestmark = pytest.mark.django_db

PAGE = reverse("experiments:account-tokens")
CREATE = reverse("experiments:account-token-create")


def test_a_new_token_is_shown_once_and_only_its_hash_is_kept(pm_client, pm):
    response = pm_client.post(CREATE, {"name": "release script", "scope": "act", "days": "30"})
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    html = response.content.decode()
    token = ApiToken.objects.get()
    secret = html.split('id="made-token" tabindex="0">')[1].split("<")[0]
    assert secret.startswith("edk_")
    assert token.token_hash == token_services.token_hash(secret)
    assert (token.user, token.name, token.scope) == (pm, "release script", TokenScope.ACT)
    assert dt.timedelta(days=29) < token.expires_at - timezone.now() <= dt.timedelta(days=30)
    again = pm_client.get(PAGE).content.decode()
    assert secret not in again
    assert token.prefix + "…" in again
    entry = AuditEntry.objects.get(kind=EntryKind.TOKEN_CREATED)
    assert secret not in entry.payload
    assert_chain_valid()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"name": "", "scope": "read", "days": "30"}, "Give the token a name"),
        ({"name": "x", "scope": "root", "days": "30"}, "Select a valid choice"),
        ({"name": "x", "scope": "read", "days": "366"}, "from 1 to 365 days"),
        ({"name": "x", "scope": "read", "days": "0"}, "from 1 to 365 days"),
        ({"name": "x" * 101, "scope": "read", "days": "30"}, "at most 100 characters"),
    ],
)
def test_bad_values_are_refused_readably(pm_client, data, message):
    response = pm_client.post(CREATE, data)
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not ApiToken.objects.exists()


def test_the_owner_revokes_their_token_and_it_is_chained(pm_client, pm):
    made = token_services.api_token_create(user=pm, name="notebook", scope=TokenScope.READ)
    response = pm_client.post(reverse("experiments:account-token-revoke", args=[made.token.pk]))
    assert response.status_code == 302
    assert token_services.api_token_authenticate(made.secret) is None
    assert AuditEntry.objects.filter(kind=EntryKind.TOKEN_REVOKED, actor=pm).count() == 1


def test_nobody_revokes_or_sees_anothers_token(client, pm, teammate):
    made = token_services.api_token_create(user=pm, name="pats-analysis-notebook", scope=TokenScope.READ)
    client.force_login(teammate)
    assert "pats-analysis-notebook" not in client.get(PAGE).content.decode()
    assert client.post(reverse("experiments:account-token-revoke", args=[made.token.pk])).status_code == 404
    assert token_services.api_token_authenticate(made.secret) is not None


def test_the_page_needs_a_sign_in_and_the_form_the_csrf_token(client, pm):
    assert client.get(PAGE).status_code == 302
    from django.test import Client

    browser = Client(enforce_csrf_checks=True)
    browser.force_login(pm)
    assert browser.post(CREATE, {"name": "x", "scope": "read", "days": "30"}).status_code == 403


def test_the_command_prints_the_token_once(pm):
    out, err = io.StringIO(), io.StringIO()
    call_command(
        "create_api_token", "pat", "--name", "deploy", "--scope", "act", "--expires-days", "7", stdout=out, stderr=err
    )
    secret = out.getvalue().strip()
    token = ApiToken.objects.get()
    assert token.token_hash == token_services.token_hash(secret)
    assert secret not in err.getvalue()
    assert AuditEntry.objects.get(kind=EntryKind.TOKEN_CREATED).actor_name == "create_api_token command"
    with pytest.raises(CommandError, match="from 1 to 365 days"):
        call_command("create_api_token", "pat", "--name", "x", "--scope", "read", "--expires-days", "400")
    with pytest.raises(CommandError, match="No active user"):
        call_command("create_api_token", "nobody", "--name", "x", "--scope", "read")


def test_a_django_admin_revokes_a_token_and_it_is_chained(client, django_user_model, pm):
    root = django_user_model.objects.create_superuser("root", password="pw-root")
    made = token_services.api_token_create(user=pm, name="leaked", scope=TokenScope.ACT)
    client.force_login(root)
    changelist = reverse("admin:experiments_apitoken_changelist")
    assert made.secret not in client.get(changelist).content.decode()
    response = client.post(changelist, {"action": "revoke", "_selected_action": [made.token.pk]})
    assert response.status_code == 302
    assert token_services.api_token_authenticate(made.secret) is None
    entry = AuditEntry.objects.get(kind=EntryKind.TOKEN_REVOKED)
    assert entry.actor == root


def test_a_staff_member_without_the_right_cannot_revoke(client, django_user_model, pm):
    staff = django_user_model.objects.create_user("staff", password="pw", is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_apitoken"))
    made = token_services.api_token_create(user=pm, name="x", scope=TokenScope.ACT)
    client.force_login(staff)
    client.post(
        reverse("admin:experiments_apitoken_changelist"), {"action": "revoke", "_selected_action": [made.token.pk]}
    )
    assert token_services.api_token_authenticate(made.secret) is not None


def test_the_worker_forgets_idempotency_answers_after_a_day(pm):
    from experiments.models import IdempotencyRecord
    from experiments.services import idempotency
    from experiments.services.worker import Housekeeping

    token = token_services.api_token_create(user=pm, name="x", scope=TokenScope.ACT).token
    old = IdempotencyRecord.objects.create(token=token, key="old", fingerprint="f", status=200)
    IdempotencyRecord.objects.filter(pk=old.pk).update(created_at=timezone.now() - idempotency.REPLAY_WINDOW)
    fresh = IdempotencyRecord.objects.create(token=token, key="new", fingerprint="f", status=200)
    Housekeeping(worker_id="w-test").tick()
    assert list(IdempotencyRecord.objects.values_list("pk", flat=True)) == [fresh.pk]
