"""The experiments list in a real browser: Chromium, the live dashboard, the Mixpanel stand-in.

The URL, the controls and the rows always agree (after sorting by a header, paging,
choosing a page size, Back and Forward); the list fits a laptop and a phone without
sideways scrolling, its rows stay about one line tall, and a keyboard reaches all of it.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import Page, expect

from tests.browser.signin import log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

LAPTOP = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}


def url_params(page: Page) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(urlsplit(page.url).query).items()}


def expect_controls_match_url(page: Page) -> None:
    """Every control says what the URL says (defaults when the URL leaves a value out)."""
    params = url_params(page)
    expect(page.locator("#search-q")).to_have_value(params.get("q", ""))
    expect(page.locator("#sort")).to_have_value(params.get("sort", "-start"))
    expect(page.locator("#page-size")).to_have_value(params.get("size", "50"))
    # Back and Forward load the page from the server: expect() waits for it to arrive.
    status = params.get("status", "all")
    current_tab = re.compile(r"^/w/\d+/(\?(?!status=)[^\"]*)?$" if status == "all" else rf"[?&]status={status}(&|$)")
    expect(page.locator('#results .tabs a[aria-current="page"]')).to_have_attribute("href", current_tab)
    column = params.get("sort", "-start").lstrip("-")
    heading = {"name": "Name", "status": "Status", "start": "Start", "days": "Days running", "exposures": "Exposures"}
    if column in heading:
        state = "descending" if params.get("sort", "-start").startswith("-") else "ascending"
        expect(page.locator("#results thead th", has_text=heading[column])).to_have_attribute("aria-sort", state)
    shown = page.locator("#results tbody tr").count()
    assert 0 < shown <= int(params.get("size", "50"))


def test_back_and_forward_restore_the_controls(page: Page, live_server, standin, pm, workspace):
    log_in(page, live_server.url, "pat")
    page.goto(f"{live_server.url}/w/{workspace.pk}/")
    page.evaluate("window.__noReload = true")  # gone if anything below reloads the page
    expect_controls_match_url(page)

    # A header sort, a page size, a tab and a search, each through htmx with the URL pushed.
    page.locator("#results thead").get_by_role("link", name="Name").click()
    expect(page).to_have_url(re.compile(r"[?&]sort=name(&|$)"))
    page.locator("#page-size").select_option("25")
    expect(page).to_have_url(re.compile(r"[?&]size=25(&|$)"))
    page.locator("#results .tabs").get_by_role("link", name=re.compile("^Active")).click()
    expect(page).to_have_url(re.compile(r"[?&]status=active(&|$)"))
    page.locator("#search-q").fill("e")
    expect(page).to_have_url(re.compile(r"[?&]q=e(&|$)"))
    expect_controls_match_url(page)
    steps = [page.url]
    assert page.evaluate("window.__noReload") is True

    # Back through every step, then Forward again: the controls follow the URL each time.
    for expected in (r"status=active&sort=name&size=25$", r"\?sort=name&size=25$", r"\?sort=name$", r"/w/\d+/$"):
        page.go_back()
        expect(page).to_have_url(re.compile(expected))
        expect_controls_match_url(page)
    for expected in (r"\?sort=name$", r"\?sort=name&size=25$"):
        page.go_forward()
        expect(page).to_have_url(re.compile(expected))
        expect_controls_match_url(page)
    page.go_forward()
    page.go_forward()
    expect(page).to_have_url(steps[0])
    expect_controls_match_url(page)
    # A search typed now keeps the restored sort (it used to be dropped silently).
    page.locator("#search-q").fill("a")
    expect(page).to_have_url(re.compile(r"[?&]q=a(&|$)"))
    assert url_params(page)["sort"] == "name"
    assert url_params(page)["status"] == "active"


def test_headers_and_pages_work_from_the_keyboard_and_live_in_the_url(page: Page, live_server, standin, pm, workspace):
    page.set_viewport_size(LAPTOP)
    log_in(page, live_server.url, "pat")
    page.goto(f"{live_server.url}/w/{workspace.pk}/?size=25")

    name = page.locator("#results thead").get_by_role("link", name="Name")
    name.focus()
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"\?sort=name&size=25$"))
    expect(page.locator("#results thead th", has_text="Name")).to_have_attribute("aria-sort", "ascending")
    expect(page.locator("#results thead th", has_text="Start")).to_have_attribute("aria-sort", "none")
    # Focus stays on the header, so a second Enter reverses the order.
    expect(page.locator("#results thead").get_by_role("link", name="Name")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"\?sort=-name&size=25$"))
    expect(page.locator("#results thead th", has_text="Name")).to_have_attribute("aria-sort", "descending")
    names = page.locator("#results tbody td.name a").all_inner_texts()
    assert names == sorted(names, key=str.casefold, reverse=True)

    # Page numbers sit above and below the rows; from the bottom one, the next page opens at the top.
    expect(page.locator("#pages-top")).to_be_visible()
    bottom_two = page.locator("#pages-bottom").get_by_role("link", name="Page 2")
    bottom_two.focus()
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"\?sort=-name&size=25&page=2$"))
    expect(page.locator("#results-summary")).to_be_focused()
    expect(page.locator("#results-summary")).to_contain_text("Showing 26\N{EN DASH}")
    top = page.evaluate("document.getElementById('results').getBoundingClientRect().top")
    assert -1 <= top <= 200, f"the results start {top}px from the top of the window"
    expect(page.locator("#pages-top a[aria-current=page]")).to_contain_text("2")

    # The row action is reached with Tab and opens the dialog; the red button stays inside it.
    action = page.locator("#results tbody").get_by_role("link", name=re.compile("^Force conclude…")).first
    action.focus()
    page.keyboard.press("Enter")
    dialog = page.locator("#force-conclude-dialog")
    expect(dialog).to_be_visible()
    expect(dialog.get_by_role("button", name="Force conclude", exact=True)).to_be_visible()
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()


@pytest.mark.parametrize("viewport", [LAPTOP, PHONE], ids=["1440px", "390px"])
def test_the_list_fits_without_sideways_scrolling(page: Page, live_server, standin, pm, workspace, viewport):
    page.set_viewport_size(viewport)
    log_in(page, live_server.url, "pat")
    page.goto(f"{live_server.url}/w/{workspace.pk}/")
    expect(page.locator("#results tbody tr").first).to_be_visible()
    sizes = page.evaluate(
        """() => {
            const wrap = document.querySelector('.table-wrap');
            const root = document.documentElement;
            return {page: [root.scrollWidth, root.clientWidth], table: [wrap.scrollWidth, wrap.clientWidth]};
        }"""
    )
    assert sizes["page"][0] <= sizes["page"][1], f"the page scrolls sideways: {sizes}"
    assert sizes["table"][0] <= sizes["table"][1], f"the table scrolls (or clips) sideways: {sizes}"
    # Nothing in a row reaches past the window's right edge.
    widest = page.evaluate(
        "Math.max(...Array.from(document.querySelectorAll('#results tbody td'))"
        ".map(td => td.getBoundingClientRect().right))"
    )
    assert widest <= viewport["width"], f"a cell ends at {widest}px"
    if viewport is LAPTOP:
        heights = page.evaluate(
            "Array.from(document.querySelectorAll('#results tbody tr')).map(tr => tr.getBoundingClientRect().height)"
        )
        tallest = page.evaluate(
            "Array.from(document.querySelectorAll('#results tbody tr'))"
            ".reduce((a, b) => (a.offsetHeight >= b.offsetHeight ? a : b)).innerText"
        )
        assert max(heights) <= 64, f"the tallest row is {max(heights)}px: {tallest}"
