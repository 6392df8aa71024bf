"""Two-person approval in a real browser: Pat asks, Quinn approves in another browser, and
exactly one PUT reaches the stand-in; Pat cannot approve Pat's own request, and an expired
request sends nothing."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.urls import reverse
from django.utils import timezone
from playwright.sync_api import Browser, Page, expect

from experiments.mixpanel import client as mixpanel
from experiments.models import AttemptState, ConclusionAttempt
from tests.browser.signin import log_in
from tests.browser.test_accessibility_browser import AXE_PATH, WIDTHS, AxeReport
from tests.browser.test_force_conclude_browser import TIMEOUT_MS, fill_dialog, open_dialog, open_workspace_and_search
from tests.test_services_force_conclude import conclude

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def ask_for_approval(page: Page, base_url: str, exp: dict) -> None:
    log_in(page, base_url, "pat")
    open_workspace_and_search(page, exp["name"])
    row = page.locator("#results tbody tr").first
    open_dialog(page, row)
    expect(page.locator("#force-conclude-dialog")).to_contain_text(
        "Needs approval: this workspace asks a second person to approve every Force conclude"
    )
    fill_dialog(page)
    page.get_by_role("button", name="Ask for approval").click()
    expect(page.locator("#toasts")).to_contain_text("Asked for approval", timeout=TIMEOUT_MS)
    # The row stays one line: a chip and the requester's one action.
    expect(row.locator("a.chip")).to_contain_text("Awaiting approval")
    expect(row.locator("a.chip")).to_have_attribute("title", re.compile("^Pat \\(pat\\) asked at"))
    expect(row.locator(".badge")).to_have_text("active")
    assert row.bounding_box()["height"] <= 64


def test_one_person_asks_a_second_approves_and_one_put_is_sent(
    page: Page, browser: Browser, live_server, standin, approving, pm, second
):
    exp = standin.find(1001, status="active")
    ask_for_approval(page, live_server.url, exp)
    row = page.locator("#results tbody tr").first
    assert standin.requests(method="PUT", path_contains=exp["id"]) == []

    # Pat sees no Approve button, and approving by hand (the form's own token) is refused.
    expect(row.get_by_role("button", name=re.compile("^Approve"))).to_have_count(0)
    expect(row.get_by_role("button", name=re.compile("^Withdraw"))).to_be_visible()
    attempt = ConclusionAttempt.objects.get(state=AttemptState.AWAITING_APPROVAL)
    answer = page.evaluate(
        """async (url) => {
            const token = document.querySelector('.attempt-review input[name=csrfmiddlewaretoken]').value;
            const body = new URLSearchParams({csrfmiddlewaretoken: token, decision: 'approve'});
            const response = await fetch(url, {method: 'POST', body, headers: {'HX-Request': 'true'}});
            return (await response.text()) + (response.headers.get('HX-Trigger') || '');
        }""",
        f"/w/{approving.pk}/attempts/{attempt.pk}/review/?back=list",
    )
    assert "you cannot approve it" in answer
    assert standin.requests(method="PUT", path_contains=exp["id"]) == []

    # Quinn, in another browser, approves with a note.
    context = browser.new_context()
    other = context.new_page()
    try:
        log_in(other, live_server.url, "quinn")
        open_workspace_and_search(other, exp["name"])
        other_row = other.locator("#results tbody tr").first
        expect(other_row.locator("a.chip")).to_contain_text("Awaiting approval")
        # The row's one action leads to the experiment page, where the request is in full.
        other_row.get_by_role("link", name=re.compile("^Review")).click()
        section = other.locator("#conclude-section")
        expect(section).to_contain_text("Awaiting approval: Pat (pat)")
        section.get_by_label(re.compile("^Note to Pat")).fill("Checked the numbers.")
        section.get_by_role("button", name=re.compile("^Approve and force conclude")).dblclick()
        expect(section).to_contain_text("You approved Pat (pat)'s request. Concluded:", timeout=TIMEOUT_MS)
        expect(section).to_contain_text("Force concluded by Pat (pat), approved by Quinn (quinn), at")
    finally:
        context.close()

    # Pat's page learns of it by itself (its line polls).
    expect(row.locator(".badge")).to_have_text("concluded", timeout=15_000)
    assert len(standin.requests(method="PUT", path_contains=exp["id"])) == 1
    attempt.refresh_from_db()
    assert attempt.state == AttemptState.SUCCEEDED
    assert attempt.actor == pm
    assert attempt.reviewer == second
    assert attempt.review_note == "Checked the numbers."


def test_an_expired_request_sends_nothing(page: Page, browser: Browser, live_server, standin, approving, pm, second):
    exp = standin.find(1001, status="active")
    ask_for_approval(page, live_server.url, exp)
    # A day passes with nobody answering.
    ConclusionAttempt.objects.filter(state=AttemptState.AWAITING_APPROVAL).update(
        expires_at=timezone.now() - dt.timedelta(minutes=1)
    )
    context = browser.new_context()
    other = context.new_page()
    try:
        log_in(other, live_server.url, "quinn")
        other.goto(f"{live_server.url}/w/{approving.pk}/experiments/{exp['id']}/")
        section = other.locator("#conclude-section")
        section.get_by_role("button", name=re.compile("^Approve and force conclude")).click()
        expect(section).to_contain_text("expired", timeout=TIMEOUT_MS)
        expect(other.locator("#experiment-header .badge")).to_have_text("active")
    finally:
        context.close()
    assert standin.requests(method="PUT", path_contains=exp["id"]) == []
    attempt = ConclusionAttempt.objects.get(actor=pm)
    assert attempt.state == AttemptState.EXPIRED


def test_a_waiting_request_reads_well_for_axe_at_both_widths(
    browser: Browser, live_server, standin, approving, pm, second
):
    """The request as the approver and the requester see it: the list row, the experiment page
    and its audit page, on a laptop and on a phone."""
    exp = standin.find(1001, status="active")
    outcome = conclude(
        approving, pm, mixpanel.client_for(approving), experiment_id=exp["id"], experiment_name=exp["name"]
    )
    attempt = outcome.attempt
    report = AxeReport()
    for username in ("quinn", "pat"):
        context = browser.new_context(viewport=WIDTHS["desktop"])
        context.add_init_script(path=str(AXE_PATH))
        try:
            page = context.new_page()
            log_in(page, live_server.url, username)
            for width, size in WIDTHS.items():
                page.set_viewport_size(size)
                report.width = width
                page.goto(
                    live_server.url + reverse("experiments:experiment-list", args=[approving.pk]) + "?q=" + exp["id"]
                )
                expect(page.locator(".attempt-chip")).to_contain_text("Awaiting approval")
                report.check(page, f"{username}: list with a waiting request")
                page.goto(live_server.url + reverse("experiments:experiment-detail", args=[approving.pk, exp["id"]]))
                expect(page.locator("#conclude-section")).to_contain_text("Awaiting approval")
                report.check(page, f"{username}: experiment page with a waiting request")
                page.goto(live_server.url + attempt.get_absolute_url())
                report.check(page, f"{username}: audit page of a waiting request")
        finally:
            context.close()
    report.assert_clean()
