"""Signing in through the login form, as every browser test starts."""

from __future__ import annotations

import re

from django.urls import reverse
from playwright.sync_api import Page, expect

# How long a browser test waits for anything (an htmx swap, a page, Mixpanel's stand-in).
TIMEOUT_MS = 10_000


def log_in(page: Page, base_url: str, username: str = "pat") -> None:
    """Sign in as `username` with the tests' password ("pw-" + username) and wait until the
    page it lands on has drawn its heading."""
    page.set_default_timeout(TIMEOUT_MS)
    login_url = base_url + reverse("login")
    page.goto(login_url)
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill("pw-" + username)
    page.get_by_role("button", name=re.compile("log in", re.IGNORECASE)).click()
    expect(page).not_to_have_url(re.compile("^" + re.escape(login_url)))
    expect(page.locator("main h1")).to_be_visible()
