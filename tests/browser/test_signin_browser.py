"""Signing in, in a real browser: through the test OpenID provider, and the password throttle.

Alice belongs to the identity provider's "growth-pms" group, which a rule maps to
concluder of Growth: she clicks "Sign in with SSO", signs in at the provider, and lands on
her workspaces. An attacker typing 60 wrong passwords sees the cool-off after the limit, and
Pat, sharing an address from which many sign-ins failed, signs in once the page's check is done.
"""

from __future__ import annotations

import re

import pytest
from django.test import Client
from playwright.sync_api import Page, expect

from experiments.models import GroupRule, Role
from experiments.signin.challenge import MSG_CHALLENGE
from experiments.signin.views import MSG_LOCKED_OUT
from tests.browser.signin import TIMEOUT_MS

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_sso_sign_in_lands_on_the_workspaces_the_groups_grant(
    page: Page, live_server, oidc_provider, workspace, other_workspace
):
    GroupRule.objects.create(group="growth-pms", workspace=workspace, role=Role.CONCLUDER)
    GroupRule.objects.create(group="payments", workspace=other_workspace, role=Role.VIEWER)
    oidc_provider.add_person("alice", sub="00u-alice", email="alice@example.com", name="Alice", groups=["growth-pms"])
    page.set_default_timeout(TIMEOUT_MS)

    page.goto(live_server.url + "/")  # sent to the sign-in page
    page.get_by_role("link", name="Sign in with SSO").click()
    expect(page.get_by_role("heading", name="Test identity provider")).to_be_visible()
    assert page.url.startswith(oidc_provider.url + "/authorize")
    page.get_by_label("Username").fill("alice")
    page.get_by_role("button", name="Continue").click()

    expect(page.get_by_role("heading", name="Your workspaces")).to_be_visible()
    assert page.url == live_server.url + "/"
    cards = page.locator(".workspace-card")
    expect(cards).to_have_count(1)
    expect(cards.first).to_contain_text("Growth")
    expect(cards.first).to_contain_text("You are concluder")
    expect(page.locator(".account-name")).to_have_text(re.compile(r"^Alice\b"))

    # Signing out ends the session: the next page asks to sign in again.
    page.get_by_role("button", name="Log out").click()
    page.goto(live_server.url + "/")
    expect(page.get_by_role("link", name="Sign in with SSO")).to_be_visible()


def test_sixty_wrong_passwords_in_the_browser_meet_the_cool_off(page: Page, live_server, pm):
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(live_server.url + "/accounts/login/")
    locked = MSG_LOCKED_OUT.format(minutes=15)
    for attempt in range(1, 61):
        if attempt > 1:
            page.goto(live_server.url + "/accounts/login/")
        page.get_by_label("Username").fill("pat")
        page.get_by_label("Password").fill(f"guess-{attempt}")
        page.get_by_role("button", name=re.compile("log in", re.IGNORECASE)).click()
        alert = page.get_by_role("alert")
        if attempt < 5:
            expect(alert).to_contain_text("correct username and password")
        else:
            expect(alert).to_have_text(locked)
    # Even the right password is refused during the cool-off.
    page.goto(live_server.url + "/accounts/login/")
    page.get_by_label("Username").fill("pat")
    page.get_by_label("Password").fill("pw-pat")
    page.get_by_role("button", name=re.compile("log in", re.IGNORECASE)).click()
    expect(page.get_by_role("alert")).to_have_text(locked)
    expect(page.get_by_role("heading", name="Your workspaces")).to_have_count(0)


def test_a_never_failed_user_on_a_busy_address_signs_in_after_the_browser_s_check(page: Page, live_server, pm):
    # Twenty failures from the browser's own address (the live server sees 127.0.0.1).
    attacker = Client()
    for i in range(20):
        attacker.post("/accounts/login/", {"username": f"guess-{i}", "password": "x"}, REMOTE_ADDR="127.0.0.1")
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(live_server.url + "/accounts/login/")
    page.get_by_label("Username").fill("pat")
    page.get_by_label("Password").fill("pw-pat")
    # Pressed at once: the form waits for the check (default difficulty), then goes.
    page.get_by_role("button", name=re.compile("log in", re.IGNORECASE)).click()
    expect(page.get_by_role("heading", name="Your workspaces")).to_be_visible()
    expect(page.get_by_text(MSG_CHALLENGE)).to_have_count(0)


def test_an_sso_admin_removed_from_the_group_loses_the_settings_page_at_the_re_check(
    page: Page, live_server, oidc_provider, workspace
):
    from importlib import import_module

    from django.conf import settings

    from experiments.signin import recheck

    # The configured engine: with Redis the server reads sessions from the cache first.
    session_store = import_module(settings.SESSION_ENGINE).SessionStore

    GroupRule.objects.create(group="growth-admins", workspace=workspace, role=Role.ADMIN)
    oidc_provider.add_person("alice", sub="00u-alice", name="Alice", groups=["growth-admins"])
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(live_server.url + "/")
    page.get_by_role("link", name="Sign in with SSO").click()
    page.get_by_label("Username").fill("alice")
    page.get_by_role("button", name="Continue").click()
    settings_page = f"{live_server.url}/w/{workspace.pk}/settings/"
    page.goto(settings_page)
    expect(page).to_have_title(re.compile(r"^Settings · Growth"))

    # Removed from the group at the provider; then the ID token expires.
    oidc_provider.add_person("alice", sub="00u-alice", name="Alice", groups=[])
    (cookie,) = [c for c in page.context.cookies() if c["name"] == "sessionid"]
    session = session_store(session_key=cookie["value"])
    session[recheck.SSO_RECHECK_AT] = 0
    session.save()

    response = page.goto(settings_page)
    assert response.status == 404
    expect(page).not_to_have_title(re.compile(r"^Settings"))
    page.goto(live_server.url + "/")
    expect(page.locator(".account-name")).to_have_text(re.compile(r"^Alice\b"))  # still signed in, without the role
    expect(page.get_by_role("heading", name="No workspaces yet")).to_be_visible()
    assert oidc_provider.refreshes == 1
