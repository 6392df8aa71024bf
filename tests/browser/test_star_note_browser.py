"""A star that takes a note in the same step, from the keyboard; saved views read as filter chips."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse
from playwright.sync_api import Page, expect

from experiments.models import Bookmark, BookmarkKind
from tests.browser.signin import log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_star_takes_an_optional_note_in_one_step_by_keyboard(page: Page, live_server, standin, pm, workspace):
    exp = standin.find(1001, status="active")
    log_in(page, live_server.url, "pat")
    page.goto(live_server.url + reverse("experiments:experiment-detail", args=[workspace.pk, exp["id"]]))
    page.evaluate("window.__noReload = true")

    star = page.locator("article button.star-button")
    expect(star).to_have_attribute("aria-pressed", "false")
    star.focus()
    page.keyboard.press("Enter")
    dialog = page.locator("#star-note-dialog")
    expect(dialog).to_be_visible()
    expect(dialog.get_by_role("heading")).to_contain_text(exp["name"].strip()[:20])
    expect(dialog.get_by_label(re.compile("^Note"))).to_be_focused()
    page.keyboard.type("Watch the refund rate before ending it.")
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")  # the "Bookmark" button

    expect(dialog).to_be_hidden()
    star = page.locator("article button.star-button")
    expect(star).to_have_attribute("aria-pressed", "true")
    expect(star).to_be_focused()  # focus stays on the (new) star, not <body>
    assert page.evaluate("window.__noReload") is True
    bookmark = Bookmark.objects.get(workspace=workspace, experiment_id=exp["id"])
    assert bookmark.note == "Watch the refund rate before ending it."

    # Cancel stars nothing; Escape too.
    star.click()  # remove: one press, no dialog
    expect(page.locator("article button.star-button")).to_have_attribute("aria-pressed", "false")
    page.locator("article button.star-button").click()
    expect(dialog).to_be_visible()
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(page.locator("article button.star-button")).to_have_attribute("aria-pressed", "false")
    assert not Bookmark.objects.filter(workspace=workspace, experiment_id=exp["id"]).exists()


def test_saved_views_read_as_filter_chips(page: Page, live_server, standin, pm, workspace):
    Bookmark.objects.create(
        workspace=workspace,
        kind=BookmarkKind.VIEW,
        view_query="status=active&q=checkout&sort=name",
        title="Checkout work",
        created_by=pm,
        created_by_name="Pat (pat)",
    )
    log_in(page, live_server.url, "pat")
    page.goto(live_server.url + reverse("experiments:bookmark-list", args=[workspace.pk]))
    chips = page.get_by_role("list", name="Filters of this view")
    expect(chips.get_by_role("listitem")).to_have_text(["Status: Active", "Search: checkout", "Sort: Name, A to Z"])
    expect(page.locator("main")).not_to_contain_text("status=active&q=")


def test_after_saving_or_removing_a_bookmark_focus_stays_on_the_page(page: Page, live_server, standin, pm, workspace):
    for title in ("First view", "Second view"):
        Bookmark.objects.create(
            workspace=workspace,
            kind=BookmarkKind.VIEW,
            view_query=f"q={title.split()[0].lower()}",
            title=title,
            created_by=pm,
            created_by_name="Pat (pat)",
        )
    log_in(page, live_server.url, "pat")
    page.goto(live_server.url + reverse("experiments:bookmark-list", args=[workspace.pk]))
    item = page.locator(".bookmark-item", has_text="First view")
    item.locator("summary").click()
    item.get_by_label(re.compile("^Note")).fill("Weekly")
    item.get_by_role("button", name="Save").press("Enter")
    expect(page.locator(".bookmark-item", has_text="First view")).to_contain_text("Weekly")
    expect(page.locator(".bookmark-item:focus, .bookmark-item :focus")).to_have_count(1)

    page.once("dialog", lambda dialog: dialog.accept())  # "Remove this bookmark for everyone?"
    page.locator(".bookmark-item", has_text="Second view").get_by_role("button", name=re.compile("^Remove")).click()
    expect(page.locator(".bookmark-item", has_text="Second view")).to_have_count(0)
    expect(page.locator("#main")).to_be_focused()
