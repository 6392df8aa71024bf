"""The experiment page in a real browser: a sample-ratio mismatch announced before the conclude
button, tables that fit a laptop and a phone, raw JSON opened from the keyboard."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse
from playwright.sync_api import Page, expect

from tests.browser.signin import log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

MISMATCH = "one-page checkout (exposures off the planned split)"


def no_horizontal_scroll(page: Page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")


@pytest.mark.parametrize(("width", "height"), [(1440, 900), (390, 844)])
def test_mismatch_is_announced_before_the_conclude_button_at_laptop_and_phone_widths(
    page: Page, live_server, standin, pm, workspace, width, height
):
    exp = next(e for e in standin.experiments(1001) if MISMATCH in e["name"])
    page.set_viewport_size({"width": width, "height": height})
    log_in(page, live_server.url, "pat")
    page.goto(live_server.url + reverse("experiments:experiment-detail", args=[workspace.pk, exp["id"]]))

    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("Sample ratio mismatch")
    expect(alert).to_contain_text("10,412")
    expect(alert).to_contain_text("Chi-square 61.46 with 1 degree of freedom")
    variants = page.get_by_role("table", name=re.compile("^Planned split and exposures"))
    expect(variants).to_contain_text("19,723")
    button = page.get_by_role("link", name="Force conclude…")
    assert alert.bounding_box()["y"] < button.bounding_box()["y"]
    assert no_horizontal_scroll(page)

    # The conclude button comes after the warning in keyboard order too.
    order = page.evaluate(
        """() => {
            const alert = document.querySelector('[role=alert]');
            const button = document.querySelector('[data-open-dialog=force-conclude-dialog]');
            return alert.compareDocumentPosition(button) & Node.DOCUMENT_POSITION_FOLLOWING;
        }"""
    )
    assert order


def test_raw_json_opens_from_the_keyboard(page: Page, live_server, standin, pm, workspace):
    exp = next(e for e in standin.experiments(1001) if MISMATCH in e["name"])
    log_in(page, live_server.url, "pat")
    page.goto(live_server.url + reverse("experiments:experiment-detail", args=[workspace.pk, exp["id"]]))
    summary = page.locator("summary", has_text="Results cache")
    details = page.locator("details", has=summary)
    expect(details).not_to_have_attribute("open", "")
    summary.focus()
    page.keyboard.press("Enter")
    expect(details).to_have_attribute("open", "")
    expect(details.locator("pre")).to_contain_text('"p_value": 0.0004')
