"""OpenID Connect sign-in against a real provider on 127.0.0.1: the code flow, every ID token check, groups."""

from __future__ import annotations

import hashlib
import logging
import re
from urllib.parse import parse_qs, urlparse

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from experiments.models import ExternalIdentity, GroupRule, Membership, Role, RoleChange
from experiments.signin import oidc
from tests.fake_mixpanel import FakeMixpanel, install

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _mixpanel_fake(monkeypatch):
    """The home page reads each workspace's experiment list: from an empty fake here, never the network."""
    return install(monkeypatch, FakeMixpanel({}))


def _start(client) -> str:
    """Press "Sign in with SSO": returns the provider's authorize URL we were sent to."""
    response = client.get(reverse("oidc_authentication_init"))
    assert response.status_code == 302
    return response["Location"]


def _callback_path(location: str) -> str:
    url = urlparse(location)
    assert url.path == reverse("oidc_authentication_callback")
    return f"{url.path}?{url.query}"


def sign_in(client, provider, username: str):
    """The whole flow as a browser would do it; returns the dashboard's answer to the callback."""
    authorize_url = _start(client)
    return client.get(_callback_path(provider.sign_in(authorize_url, username)))


def test_login_page_offers_sso_when_configured(client, oidc_provider):
    page = client.get(reverse("login")).content.decode()
    assert "Sign in with SSO" in page
    assert reverse("oidc_authentication_init") in page


def test_login_page_has_no_sso_button_without_configuration(client):
    assert "Sign in with SSO" not in client.get(reverse("login")).content.decode()


def test_start_sends_the_browser_to_the_discovered_authorize_endpoint(client, oidc_provider):
    location = _start(client)
    url = urlparse(location)
    assert f"{url.scheme}://{url.netloc}{url.path}" == oidc_provider.url + "/authorize"
    query = parse_qs(url.query)
    assert query["client_id"] == [oidc_provider.client_id]
    assert "openid" in query["scope"][0].split()
    assert query["nonce"][0]
    assert query["state"][0]
    assert query["code_challenge_method"] == ["S256"]


def test_first_sign_in_creates_the_user_from_claims_and_keeps_sub(client, oidc_provider, workspace):
    oidc_provider.add_person(
        "alice", sub="00u-alice-42", email="alice@example.com", given_name="Alice", family_name="Liddell"
    )
    response = sign_in(client, oidc_provider, "alice")
    assert response.status_code == 302
    assert response["Location"] == reverse("home")
    identity = ExternalIdentity.objects.get(subject="00u-alice-42")
    assert identity.issuer == oidc_provider.url
    user = identity.user
    assert (user.username, user.email, user.get_full_name()) == ("alice", "alice@example.com", "Alice Liddell")
    assert not user.has_usable_password()
    assert client.get(reverse("home")).wsgi_request.user == user


def test_second_sign_in_finds_the_same_user_by_sub_even_when_the_email_changed(client, oidc_provider):
    oidc_provider.add_person("alice", sub="s-1", email="alice@old.example")
    sign_in(client, oidc_provider, "alice")
    client.logout()
    oidc_provider.add_person("alice", sub="s-1", email="alice@new.example")
    sign_in(client, oidc_provider, "alice")
    assert get_user_model().objects.filter(external_identity__subject="s-1").count() == 1
    assert get_user_model().objects.get(external_identity__subject="s-1").email == "alice@new.example"


def test_sso_identity_never_takes_over_a_local_account_of_the_same_name(client, oidc_provider, pm):
    oidc_provider.add_person("pat", sub="someone-else", email="pat@example.com")
    sign_in(client, oidc_provider, "pat")
    user = ExternalIdentity.objects.get(subject="someone-else").user
    assert user != pm
    assert user.username.startswith("pat-")
    assert not Membership.objects.filter(user=user).exists()


def test_first_sign_in_gets_a_fresh_name_when_both_usual_names_are_taken(client, oidc_provider, pm, django_user_model):
    # "pat" is a local account, and so is the name a second "pat" would get next
    # (the name with a short hash of the subject): the account gets another fresh name.
    suffix = hashlib.sha256(b"pat-at-the-provider").hexdigest()[:8]
    squatter = django_user_model.objects.create_user(username=f"pat-{suffix}")
    oidc_provider.add_person("pat", sub="pat-at-the-provider")
    response = sign_in(client, oidc_provider, "pat")
    assert response.status_code == 302
    user = ExternalIdentity.objects.get(subject="pat-at-the-provider").user
    assert user not in (pm, squatter)
    assert re.fullmatch(r"pat-[0-9a-f]{8}", user.username)


def test_a_name_taken_between_the_check_and_the_insert_gets_another(client, oidc_provider, monkeypatch):
    from experiments.services import signin as signin_services

    # Another sign-in takes "alice" just after this one saw it free.
    taken = []

    def check_then_lose_the_race(name: str) -> bool:
        if not taken:
            get_user_model().objects.create_user(username=name)
            taken.append(name)
            return False
        return get_user_model().objects.filter(username=name).exists()

    monkeypatch.setattr(signin_services, "_username_taken", check_then_lose_the_race)
    oidc_provider.add_person("alice", sub="a-race")
    assert sign_in(client, oidc_provider, "alice").status_code == 302
    assert ExternalIdentity.objects.get(subject="a-race").user.username.startswith("alice-")


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        ({"iss": "http://127.0.0.1:1/not-the-issuer"}, oidc.MSG_WRONG_ISSUER),
        ({"aud": "another-application"}, oidc.MSG_WRONG_AUDIENCE),
        ({"exp_offset": -3600}, oidc.MSG_EXPIRED),
        ({"foreign_key": True}, oidc.MSG_BAD_SIGNATURE),
        ({"nonce": "a-nonce-from-another-sign-in"}, oidc.MSG_NONCE),
        ({"drop_sub": True}, oidc.MSG_NO_SUBJECT),
    ],
    ids=["wrong-issuer", "wrong-audience", "expired", "bad-signature", "foreign-nonce", "missing-sub"],
)
def test_a_bad_id_token_is_refused_with_a_readable_page_and_logged_without_the_token(
    client, oidc_provider, caplog, spoil, message
):
    oidc_provider.add_person("mallory", sub="m-1")
    oidc_provider.spoil(**spoil)
    with caplog.at_level(logging.WARNING, logger="experiments.signin"):
        response = sign_in(client, oidc_provider, "mallory")
    assert response.status_code == 400
    page = response.content.decode()
    assert "Sign-in did not complete" in page
    assert message in page or message.replace("'", "&#x27;") in page
    assert not response.wsgi_request.user.is_authenticated
    assert not ExternalIdentity.objects.exists()
    assert "SSO sign-in failed" in caplog.text
    assert "eyJ" not in caplog.text  # no JWT (their header always starts so) in the log
    assert oidc_provider.client_secret not in caplog.text
    assert oidc_provider.client_secret not in page


@pytest.mark.parametrize(
    "spoil",
    [
        {"aud": ["experiment-desk-test", "another-application"]},
        {"aud": ["experiment-desk-test", "another-application"], "azp": "another-application"},
        {"azp": "another-application"},
    ],
    ids=["several-audiences-no-azp", "several-audiences-foreign-azp", "one-audience-foreign-azp"],
)
def test_a_token_authorised_for_another_party_is_refused(client, oidc_provider, spoil):
    # OpenID Connect Core 3.1.3.7: with several audiences azp must be present and be our
    # client id; when azp is present it must be our client id.
    oidc_provider.add_person("mallory", sub="m-2")
    oidc_provider.spoil(**spoil)
    response = sign_in(client, oidc_provider, "mallory")
    assert response.status_code == 400
    assert oidc.MSG_WRONG_AUDIENCE in response.content.decode()
    assert not ExternalIdentity.objects.exists()


def test_several_audiences_with_our_azp_sign_in(client, oidc_provider):
    oidc_provider.add_person("alice", sub="a-azp")
    oidc_provider.spoil(aud=[oidc_provider.client_id, "another-application"], azp=oidc_provider.client_id)
    assert sign_in(client, oidc_provider, "alice").status_code == 302
    assert ExternalIdentity.objects.filter(subject="a-azp").exists()


def test_replayed_callback_is_refused(client, oidc_provider):
    oidc_provider.add_person("alice")
    authorize_url = _start(client)
    callback = _callback_path(oidc_provider.sign_in(authorize_url, "alice"))
    assert client.get(callback).status_code == 302
    client.logout()
    replay = client.get(callback)
    assert replay.status_code == 400
    assert oidc.MSG_STATE in replay.content.decode()
    assert not replay.wsgi_request.user.is_authenticated


def test_replayed_nonce_from_an_earlier_sign_in_is_refused(client, oidc_provider):
    oidc_provider.add_person("alice")
    sign_in(client, oidc_provider, "alice")
    client.logout()
    earlier = oidc_provider.issued_nonces[-1]
    oidc_provider.spoil(nonce=earlier)
    response = sign_in(client, oidc_provider, "alice")
    assert response.status_code == 400
    assert "did not belong to this sign-in" in response.content.decode()


def test_provider_error_answer_is_a_readable_page(client, oidc_provider):
    _start(client)
    response = client.get(reverse("oidc_authentication_callback") + "?error=access_denied&state=x")
    assert response.status_code == 400
    assert oidc.MSG_DENIED in response.content.decode()


def test_unreachable_provider_is_a_readable_page_not_a_500(client, oidc_provider, settings):
    settings.OIDC_ISSUER_URL = "http://127.0.0.1:9"  # discard port: nothing listens
    oidc.forget_provider_config()
    response = client.get(reverse("oidc_authentication_init"))
    assert response.status_code == 400
    assert oidc.MSG_PROVIDER_DOWN in response.content.decode()


def test_wrong_client_secret_is_a_readable_page(client, oidc_provider, monkeypatch):
    oidc_provider.add_person("alice")
    monkeypatch.setenv("OIDC_CLIENT_SECRET", "not-the-secret")
    response = sign_in(client, oidc_provider, "alice")
    assert response.status_code == 400
    assert oidc.MSG_PROVIDER_DOWN in response.content.decode()
    assert "not-the-secret" not in response.content.decode()


def test_client_secret_can_come_from_a_file(client, oidc_provider, monkeypatch, tmp_path):
    secret_file = tmp_path / "secret"
    secret_file.write_text(oidc_provider.client_secret + "\n")
    monkeypatch.delenv("OIDC_CLIENT_SECRET")
    monkeypatch.setenv("OIDC_CLIENT_SECRET_FILE", str(secret_file))
    oidc_provider.add_person("alice")
    assert sign_in(client, oidc_provider, "alice").status_code == 302


def test_sso_urls_answer_404_when_not_configured(client):
    assert client.get(reverse("oidc_authentication_init")).status_code == 404
    assert client.get(reverse("oidc_authentication_callback") + "?code=a&state=b").status_code == 404


# --- Roles from groups -----------------------------------------------------------------
def test_groups_grant_roles_and_changes_between_sign_ins_follow(client, oidc_provider, workspace, other_workspace):
    GroupRule.objects.create(group="growth-pms", workspace=workspace, role=Role.CONCLUDER)
    GroupRule.objects.create(group="payments", workspace=other_workspace, role=Role.VIEWER)
    oidc_provider.add_person("alice", sub="a-1", groups=["growth-pms", "unrelated"])
    sign_in(client, oidc_provider, "alice")
    user = ExternalIdentity.objects.get(subject="a-1").user
    assert {(m.workspace, m.role) for m in user.memberships.all()} == {(workspace, Role.CONCLUDER)}
    home = client.get(reverse("home")).content.decode()
    assert "Growth" in home
    assert "Payments" not in home

    # Between the two sign-ins: left growth-pms, joined payments.
    client.logout()
    oidc_provider.add_person("alice", sub="a-1", groups=["payments"])
    sign_in(client, oidc_provider, "alice")
    assert {(m.workspace, m.role) for m in user.memberships.all()} == {(other_workspace, Role.VIEWER)}
    changes = [(c.action, c.workspace_name, c.role, c.group, c.source) for c in RoleChange.objects.order_by("id")]
    assert changes == [
        ("added", "Growth", "concluder", "growth-pms", "sso"),
        ("removed", "Growth", "concluder", "growth-pms", "sso"),
        ("added", "Payments", "viewer", "payments", "sso"),
    ]
    assert all(c.user_name == "alice" for c in RoleChange.objects.all())


def test_auditor_group_grants_review_all_and_lands_on_the_audit_trail(client, oidc_provider):
    oidc_provider.add_person("aud", sub="aud-1", groups=["auditors"])
    response = sign_in(client, oidc_provider, "aud")
    assert client.get(response["Location"]).url == reverse("experiments:audit-list")
    assert client.get(reverse("experiments:audit-list")).status_code == 200
    client.logout()
    oidc_provider.add_person("aud", sub="aud-1", groups=[])
    sign_in(client, oidc_provider, "aud")
    user = ExternalIdentity.objects.get(subject="aud-1").user
    user = get_user_model().objects.get(pk=user.pk)  # a fresh permission cache
    assert not user.has_perm("experiments.review_all_conclusions")
    assert list(RoleChange.objects.order_by("id").values_list("action", "role")) == [
        ("added", "auditor"),
        ("removed", "auditor"),
    ]


def test_groups_claim_name_is_configurable(client, oidc_provider, settings, workspace):
    settings.OIDC_GROUPS_CLAIM = "roles"
    GroupRule.objects.create(group="growth", workspace=workspace, role=Role.ADMIN)
    oidc_provider.add_person("alice", sub="a-2", roles=["growth"])
    sign_in(client, oidc_provider, "alice")
    assert Membership.objects.get(user__external_identity__subject="a-2").role == Role.ADMIN


def test_deactivated_person_is_refused_and_their_session_ends(client, oidc_provider):
    oidc_provider.add_person("alice", sub="a-9")
    sign_in(client, oidc_provider, "alice")
    assert client.get(reverse("home")).status_code == 200
    get_user_model().objects.filter(external_identity__subject="a-9").update(is_active=False)
    assert client.get(reverse("home")).status_code == 302  # the open session no longer counts
    response = sign_in(client, oidc_provider, "alice")
    assert response.status_code == 400
    assert "deactivated" in response.content.decode()
