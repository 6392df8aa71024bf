"""Team bookmarks in a real browser (issue 7): Chromium, the live dashboard, the Mixpanel stand-in.

Pat stars an experiment and bookmarks a filtered view with a note, without a page
reload; Tess, in her own browser session, sees both on the Bookmarks page, and the
view's link brings back Pat's filters.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser.signin import log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_bookmarks_added_by_one_member_are_seen_by_another(
    page: Page, browser: Browser, live_server, standin, pm, teammate, workspace
):
    exp = standin.find(1001, status="active")
    log_in(page, live_server.url, "pat")
    page.get_by_role("link", name="Growth", exact=True).click()
    expect(page.locator("h1.workspace-title")).to_have_text("Growth")
    page.evaluate("window.__noReload = true")  # gone if anything below reloads the page

    # Star the experiment on its row: the button swaps in place and the strip follows.
    page.locator("#search-q").fill(exp["id"])
    expect(page.locator("#results tbody tr")).to_have_count(1)
    star = page.locator("#results tbody tr").first.locator("button.star-button")
    expect(star).to_have_attribute("aria-pressed", "false")
    star.click()
    page.locator("#star-note-dialog").get_by_role("button", name="Bookmark").click()  # the note is optional
    expect(page.locator("#results tbody tr").first.locator("button.star-button")).to_have_attribute(
        "aria-pressed", "true"
    )
    expect(page.locator("#bookmark-strip")).to_contain_text(exp["name"].strip()[:20])

    # Filter to the Active tab (htmx pushes the URL), then bookmark that view.
    page.locator("#search-q").fill("")
    expect(page).not_to_have_url(re.compile(r"[?&]q="))  # the cleared search has been applied
    expect(page.locator("#results tbody tr")).not_to_have_count(1)
    page.locator("#results .tabs").get_by_role("link", name=re.compile("^Active")).click()
    expect(page).to_have_url(re.compile(r"[?&]status=active"))
    page.get_by_text("Bookmark this view", exact=True).first.click()  # opens the <details>
    form = page.locator("#bookmark-view-form")
    form.get_by_label(re.compile("^Title")).fill("Live experiments")
    form.get_by_label(re.compile("^Note")).fill("Checking these every morning")
    form.get_by_role("button", name="Bookmark this view").click()
    expect(page.locator("#bookmark-view-form")).to_contain_text("Bookmarked the view “Live experiments”")
    expect(page.locator("#bookmark-strip")).to_contain_text("Live experiments")
    assert page.evaluate("window.__noReload") is True

    # Tess, in a separate browser session, sees both with their notes and who added them.
    context = browser.new_context()
    try:
        other = context.new_page()
        log_in(other, live_server.url, "tess")
        other.goto(f"{live_server.url}/w/{workspace.pk}/bookmarks/")
        items = other.locator("#bookmark-items")
        expect(items).to_contain_text("Live experiments")
        expect(items).to_contain_text("Checking these every morning")
        expect(items).to_contain_text(exp["name"].strip()[:20])
        expect(items).to_contain_text("Added by Pat (pat)")
        expect(other.locator(".bookmark-activity")).to_contain_text("Pat (pat) added")
        # Tess may not edit Pat's bookmarks: no controls for her.
        expect(items.get_by_role("button", name=re.compile("^Remove"))).to_have_count(0)
        # The view's link brings back the filter.
        items.get_by_role("link", name="Live experiments").click()
        expect(other).to_have_url(re.compile(r"/w/\d+/\?status=active$"))
        expect(other.locator('.tabs a[aria-current="page"]')).to_contain_text("Active")
    finally:
        context.close()

    # Pat edits the note in place on the Bookmarks page.
    page.goto(f"{live_server.url}/w/{workspace.pk}/bookmarks/")
    page.evaluate("window.__noReload = true")
    item = page.locator(".bookmark-item", has_text="Live experiments")
    item.locator("summary").click()
    item.get_by_label(re.compile("^Note")).fill("Now weekly")
    item.get_by_role("button", name="Save").click()
    expect(page.locator(".bookmark-item", has_text="Live experiments")).to_contain_text("Now weekly")
    assert page.evaluate("window.__noReload") is True
