"""An auditor who belongs to no workspace, in a real browser: they land on the audit trail,
every link on the audit screens leads somewhere they may go (no 404s), and members keep
their links."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse
from playwright.sync_api import Page, expect

from tests.browser.signin import log_in
from tests.factories import make_attempt

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def links_on(page: Page, base_url: str) -> set[str]:
    hrefs = page.eval_on_selector_all("a[href]", "els => els.map((a) => a.href)")
    return {h for h in hrefs if h.startswith(base_url) and "/export." not in h}


def test_no_audit_screen_links_an_auditor_to_a_404(page: Page, live_server, standin, workspace, pm, auditor):
    attempt = make_attempt(workspace=workspace, actor=pm, experiment_id=standin.find(1001, status="active")["id"])
    log_in(page, live_server.url, "aud")
    # Their home is the audit trail: no workspace of their own, so no empty "Workspaces" page.
    expect(page).to_have_url(re.compile(r"/audit/$"))
    expect(page.locator("main h1")).to_have_text("Audit trail")
    screens = [
        reverse("experiments:audit-list"),
        reverse("experiments:audit-workspace-list", args=[workspace.pk]),
        attempt.get_absolute_url(),
    ]
    followed = set()
    for path in screens:
        page.goto(live_server.url + path)
        for href in links_on(page, live_server.url) - followed:
            followed.add(href)
            status = page.request.get(href).status
            assert status < 400, f"{href} (linked from {path}) answered {status}"
    assert followed, "the audit screens had no links at all"

    # What they may not open is named in plain text instead.
    page.goto(live_server.url + attempt.get_absolute_url())
    expect(page.locator("dl.facts").first).to_contain_text("Growth")
    expect(page.get_by_role("link", name="experiment page")).to_have_count(0)
    page.goto(live_server.url + reverse("experiments:audit-workspace-list", args=[workspace.pk]))
    expect(page.get_by_role("link", name=re.compile("Back to the experiments"))).to_have_count(0)


def test_a_member_keeps_the_links_to_the_workspace_and_the_experiment(page: Page, live_server, standin, workspace, pm):
    exp = standin.find(1001, status="active")
    attempt = make_attempt(workspace=workspace, actor=pm, experiment_id=exp["id"], experiment_name=exp["name"])
    log_in(page, live_server.url, "pat")
    page.goto(live_server.url + attempt.get_absolute_url())
    page.get_by_role("link", name="experiment page").click()
    expect(page.locator("article h1")).to_have_text(exp["name"])
    page.goto(live_server.url + reverse("experiments:audit-workspace-list", args=[workspace.pk]))
    page.get_by_role("link", name="Back to the experiments of Growth").click()
    expect(page.locator("h1.workspace-title")).to_have_text("Growth")
