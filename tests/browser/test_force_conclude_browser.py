"""Force conclude in a real browser: Chromium, the live dashboard, the Mixpanel stand-in.

A person logs in, opens the workspace, searches, presses Force conclude, fills the
dialog and confirms; the row changes in place without a reload, a second click
sends no second PUT, and an upstream fault is reported in words.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from tests.browser.signin import TIMEOUT_MS, log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def open_workspace_and_search(page: Page, text: str) -> None:
    page.get_by_role("link", name="Growth", exact=True).click()
    expect(page.locator("h1.workspace-title")).to_have_text("Growth")
    page.locator("#search-q").fill(text)  # htmx searches as the person types
    expect(page).to_have_url(re.compile(r"[?&]q="), timeout=TIMEOUT_MS)
    expect(page.locator("#results tbody tr")).to_have_count(1, timeout=TIMEOUT_MS)


def open_dialog(page: Page, row) -> None:
    row.get_by_role("link", name=re.compile("^Force conclude")).click()
    dialog = page.locator("#force-conclude-dialog")
    expect(dialog).to_be_visible()
    expect(dialog.locator("#force-conclude-form")).to_be_visible(timeout=TIMEOUT_MS)
    # Focus moved into the dialog, on its first field.
    expect(page.locator("#fc-reason-category")).to_be_focused()
    expect(dialog).to_contain_text("records no decision")
    expect(dialog).to_contain_text("changes no feature flag")


def fill_dialog(page: Page) -> None:
    page.locator("#force-conclude-form").get_by_label("Reason").select_option("significance")
    page.locator("#force-conclude-form").get_by_label("In your own words").fill("The treatment won clearly.")
    # The end date defaults to now (UTC): left as it is.


def test_force_conclude_in_the_browser(page: Page, live_server, standin, pm, workspace):
    exp = standin.find(1001, status="active")
    # A slow PUT keeps the request in flight long enough to click again.
    standin.set_fault("latency", experiment_id=exp["id"], method="PUT", latency_ms=1500)
    log_in(page, live_server.url)
    open_workspace_and_search(page, exp["name"])
    page.evaluate("window.__noReload = true")

    row = page.locator("#results tbody tr").first
    expect(row.locator(".badge")).to_have_text("active")
    # Star it first: the redrawn row must keep the page's own star.
    row.locator("button.star-button").click()
    page.locator("#star-note-dialog").get_by_role("button", name="Bookmark").click()  # no note
    expect(row.locator("button.star-button")).to_have_attribute("aria-pressed", "true")
    open_dialog(page, row)
    fill_dialog(page)

    submit = page.locator("#force-conclude-submit")
    submit.dblclick()  # the second click lands on a disabled button
    expect(submit).to_be_disabled()
    expect(page.locator("#force-conclude-progress")).to_be_visible()

    # The row changes in place; the dialog closes; a toast says what happened.
    expect(row.locator(".badge")).to_have_text("concluded", timeout=TIMEOUT_MS)
    expect(row).to_contain_text("Concluded by Pat (pat) at")
    expect(page.locator("#force-conclude-dialog")).to_be_hidden()
    expect(page.locator("#toasts .toast").filter(has_text="Concluded")).to_have_count(1)
    assert page.evaluate("window.__noReload") is True

    # The star survived the redraw, and still works.
    star = row.locator("button.star-button")
    expect(star).to_have_attribute("aria-pressed", "true")
    star.click()
    expect(row.locator("button.star-button")).to_have_attribute("aria-pressed", "false")

    # No button remains, and exactly one PUT reached Mixpanel.
    expect(row.get_by_role("link", name=re.compile("^Force conclude"))).to_have_count(0)
    assert len(standin.requests(method="PUT", path_contains=exp["id"])) == 1
    assert standin.experiment(1001, exp["id"])["status"] == "concluded"


def test_upstream_fault_is_shown_readably(page: Page, live_server, standin, pm, workspace):
    exp = next(e for e in standin.experiments(1001) if e["name"].startswith("[demo fault] Mixpanel rate limits"))
    log_in(page, live_server.url)
    open_workspace_and_search(page, "rate limits us")
    row = page.locator("#results tbody tr").first
    open_dialog(page, row)
    fill_dialog(page)
    page.locator("#force-conclude-submit").click()

    alert = row.locator("p.error[role=alert]")
    expect(alert).to_be_visible(timeout=TIMEOUT_MS)
    expect(alert).to_contain_text(re.compile("rate limit", re.IGNORECASE))
    expect(alert).to_contain_text(re.compile("try again", re.IGNORECASE))
    expect(row.locator(".badge")).to_have_text("active")
    assert "CANARY" not in page.content()
    assert standin.experiment(1001, exp["id"])["status"] == "active"


def test_validation_error_stays_in_the_dialog(page: Page, live_server, standin, pm, workspace):
    exp = standin.find(1001, status="active")
    log_in(page, live_server.url)
    open_workspace_and_search(page, exp["name"])
    row = page.locator("#results tbody tr").first
    open_dialog(page, row)
    page.locator("#force-conclude-submit").click()  # no reason given
    dialog = page.locator("#force-conclude-dialog")
    expect(dialog.locator(".field-error").first).to_contain_text("Choose a reason.", timeout=TIMEOUT_MS)
    expect(dialog).to_be_visible()
    page.keyboard.press("Escape")  # Esc closes the dialog
    expect(dialog).to_be_hidden()
    expect(row.locator(".badge")).to_have_text("active")
    assert standin.requests(method="PUT", path_contains=exp["id"]) == []
