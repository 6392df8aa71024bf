"""The product manager's, the approver's and the auditor's screens, measured in a real browser.

Chromium over the live dashboard and the Mixpanel stand-in. Every check here measures the
page (Playwright's bounding boxes, scrollWidth, what is selected or focused); none is timed.
"""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.urls import reverse
from django.utils import timezone
from playwright.sync_api import Browser, Page, expect

from experiments.models import AttemptAction, AttemptState, ConclusionAttempt, ConclusionClaim
from tests.browser.signin import TIMEOUT_MS, log_in
from tests.browser.test_force_conclude_browser import fill_dialog, open_dialog, open_workspace_and_search
from tests.factories import make_attempt

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

LAPTOP = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}
# A waiting row stays one line: at most this tall on a laptop.
ONE_LINE_PX = 64


def waiting_attempt(workspace, actor, exp: dict, state: str) -> ConclusionAttempt:
    """An attempt on `exp` holding its conclusion claim in `state`, as a press leaves it."""
    attempt = ConclusionAttempt.objects.create(
        workspace=workspace,
        experiment_id=exp["id"],
        experiment_name=exp["name"],
        actor=actor,
        actor_name="Pat (pat)",
        reason_category="significance",
        reason_text="The lift is clear.",
        state=state,
        expires_at=timezone.now() + dt.timedelta(hours=24) if state == AttemptState.AWAITING_APPROVAL else None,
    )
    ConclusionClaim.objects.create(
        workspace=workspace, experiment_id=exp["id"], action=AttemptAction.CONCLUSION, attempt=attempt
    )
    return attempt


def row_of(page: Page, exp: dict):
    return page.locator("#results tbody tr", has=page.locator(f'[data-copy="{exp["id"]}"]'))


def test_force_conclude_is_named_on_the_row_the_page_and_the_dialog(page: Page, live_server, standin, pm, workspace):
    exp = standin.find(1001, status="active")
    page.set_viewport_size(LAPTOP)
    log_in(page, live_server.url)
    open_workspace_and_search(page, exp["name"])
    row = page.locator("#results tbody tr").first
    expect(row.get_by_role("link", name=re.compile("^Force conclude…"))).to_be_visible()
    page.goto(live_server.url + reverse("experiments:experiment-detail", args=[workspace.pk, exp["id"]]))
    section = page.locator("#conclude-section")
    expect(section.get_by_role("heading", level=2)).to_have_text("Force conclude, then decide")
    expect(section.get_by_role("link", name="Force conclude…")).to_be_visible()
    expect(section).to_contain_text("It ships nothing and changes no feature flag; Record the decision comes next.")
    section.get_by_role("link", name="Force conclude…").click()
    dialog = page.locator("#force-conclude-dialog")
    expect(dialog.get_by_role("heading", level=2)).to_have_text(f"Force conclude “{exp['name']}”?")
    expect(dialog).to_contain_text("ships nothing")
    expect(dialog.get_by_role("button", name="Force conclude", exact=True)).to_be_visible()
    assert "End analysis" not in page.content()


def test_waiting_unknown_and_awaiting_rows_stay_one_line(page: Page, live_server, standin, pm, workspace):
    active = [e for e in standin.experiments(1001) if e["status"] == "active"][:3]
    states = (AttemptState.REQUESTED, AttemptState.UNKNOWN, AttemptState.AWAITING_APPROVAL)
    for exp, state in zip(active, states, strict=True):
        waiting_attempt(workspace, pm, exp, state)
    page.set_viewport_size(LAPTOP)
    log_in(page, live_server.url)
    page.goto(live_server.url + reverse("experiments:experiment-list", args=[workspace.pk]))
    for exp, chip in zip(active, ("Waiting for Mixpanel", "Answer lost: checking", "Awaiting approval"), strict=True):
        row = row_of(page, exp)
        expect(row.locator("a.chip")).to_contain_text(chip)
        height = row.bounding_box()["height"]
        assert height <= ONE_LINE_PX, f"the {chip!r} row is {height}px tall"
        # No alarm for what resolves by itself: nothing in red on the row.
        expect(row.locator(".error, .danger")).to_have_count(0)
    # Each has its one action; the details are one click away, on the experiment page.
    expect(row_of(page, active[1]).get_by_role("button", name="Check Mixpanel now")).to_be_visible()
    expect(row_of(page, active[2]).get_by_role("button", name=re.compile("^Withdraw"))).to_be_visible()
    row_of(page, active[1]).locator("a.chip").click()
    expect(page.locator("#conclude-section")).to_contain_text("its answer was lost")


def test_at_least_ten_rows_above_the_fold_on_a_laptop(page: Page, live_server, standin, pm, workspace):
    page.set_viewport_size(LAPTOP)
    log_in(page, live_server.url)
    page.goto(live_server.url + reverse("experiments:experiment-list", args=[workspace.pk]))
    expect(page.locator("#results tbody tr").first).to_be_visible()
    bottoms = page.evaluate(
        "Array.from(document.querySelectorAll('#results tbody tr')).map(tr => tr.getBoundingClientRect().bottom)"
    )
    above = sum(1 for bottom in bottoms if bottom <= LAPTOP["height"])
    assert above >= 10, f"{above} rows above the fold: {bottoms[:12]}"
    # Tags and owner stay visible at this width.
    expect(page.locator("#results thead th", has_text="Tags")).to_be_visible()
    expect(page.locator("#results thead th", has_text="Creator")).to_be_visible()
    # The filters take one line.
    middles = [
        box["y"] + box["height"] / 2 for box in (f.bounding_box() for f in page.locator("#filters > *").all()) if box
    ]
    assert max(middles) - min(middles) < 20, f"the filters take more than one line: {middles}"


def test_the_audit_list_fits_a_laptop_without_sideways_scrolling(
    page: Page, live_server, standin, pm, workspace, auditor
):
    exp = standin.find(1001, status="active")
    long = "A reason that goes on and on " * 12
    make_attempt(workspace=workspace, actor=pm, experiment_id=exp["id"], experiment_name=exp["name"], reason_text=long)
    make_attempt(workspace=workspace, actor=pm, outcome="failed", http_status=503, error="Mixpanel was down. " * 10)
    page.set_viewport_size(LAPTOP)
    log_in(page, live_server.url, "aud")
    for params in ("", "?action=controls"):
        page.goto(live_server.url + reverse("experiments:audit-list") + params)
        expect(page.locator("main h1")).to_have_text("Audit trail")
        sizes = page.evaluate(
            """() => {
                const root = document.documentElement;
                const wrap = document.querySelector('.table-wrap');
                const table = wrap ? [wrap.scrollWidth, wrap.clientWidth] : [0, 0];
                return {page: [root.scrollWidth, root.clientWidth], table};
            }"""
        )
        assert sizes["page"][0] <= sizes["page"][1], f"the page scrolls sideways: {sizes}"
        assert sizes["table"][0] <= sizes["table"][1], f"the table scrolls sideways: {sizes}"
    page.goto(live_server.url + reverse("experiments:audit-list"))
    expect(page.locator("#audit-results thead")).to_contain_text("Approved by")


@pytest.mark.parametrize("screen", ["list", "home", "audit"])
def test_the_first_row_is_on_a_phones_first_screen(page: Page, live_server, standin, pm, workspace, screen):
    make_attempt(workspace=workspace, actor=pm, experiment_id=standin.find(1001, status="active")["id"])
    page.set_viewport_size(PHONE)
    log_in(page, live_server.url)
    url, rows = {
        "list": (reverse("experiments:experiment-list", args=[workspace.pk]), "#results tbody tr"),
        # Decisions owed come first on the home page: its first row is the page's first row.
        "home": (reverse("home"), "main tbody tr"),
        "audit": (reverse("experiments:audit-list"), "#audit-results tbody tr"),
    }[screen]
    page.goto(live_server.url + url)
    first = page.locator(rows).first
    expect(first).to_be_visible()
    box = first.bounding_box()
    assert box["y"] + 40 <= PHONE["height"], f"the first row starts at {box['y']}px"
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]


def test_both_dialogs_show_their_buttons_on_a_phone_without_scrolling(page: Page, live_server, standin, approving, pm):
    exp = standin.find(1001, status="active")
    page.set_viewport_size(PHONE)
    log_in(page, live_server.url)
    page.goto(live_server.url + reverse("experiments:experiment-detail", args=[approving.pk, exp["id"]]))
    page.get_by_role("link", name="Force conclude…").click()
    submit = page.locator("#force-conclude-submit")
    expect(submit).to_be_visible()
    expect(submit).to_be_in_viewport()
    box = submit.bounding_box()
    assert box["y"] + box["height"] <= PHONE["height"]
    page.keyboard.press("Escape")
    ended = next(e for e in standin.experiments(1001) if e["status"] == "concluded" and e["variants"])
    page.goto(live_server.url + reverse("experiments:experiment-detail", args=[approving.pk, ended["id"]]))
    page.get_by_role("link", name="Record the decision").click()
    record = page.locator("#decide-submit")
    expect(record).to_be_in_viewport()
    box = record.bounding_box()
    assert box["y"] + box["height"] <= PHONE["height"]


def test_one_notice_at_a_time(page: Page, live_server, standin, pm, workspace):
    page.set_viewport_size(LAPTOP)
    log_in(page, live_server.url)
    page.goto(live_server.url + reverse("experiments:experiment-list", args=[workspace.pk]))
    page.evaluate(
        """() => {
            for (const message of ["First notice.", "Second notice.", "Third notice."]) {
                document.body.dispatchEvent(new CustomEvent("showToast", {bubbles: true, detail: {message}}));
            }
        }"""
    )
    expect(page.locator("#toasts .toast")).to_have_count(1)
    expect(page.locator("#toasts")).to_contain_text("Third notice.")
    page.locator("#toasts").get_by_role("button", name="Dismiss").click()
    expect(page.locator("#toasts .toast")).to_have_count(0)


def test_copy_id_selects_the_id_where_the_clipboard_is_missing(browser: Browser, live_server, standin, pm, workspace):
    context = browser.new_context(viewport=LAPTOP)
    # As on a plain http:// address: no clipboard API.
    context.add_init_script("Object.defineProperty(navigator, 'clipboard', {value: undefined})")
    context.set_default_timeout(TIMEOUT_MS)
    try:
        page = context.new_page()
        log_in(page, live_server.url)
        page.goto(live_server.url + reverse("experiments:experiment-list", args=[workspace.pk]))
        copy = page.locator("#results tbody tr").first.locator(".copy-id")
        wanted = copy.get_attribute("data-copy")
        copy.click()
        assert page.evaluate("window.getSelection().toString()") == wanted
        expect(page.locator("#announcer")).to_contain_text(re.compile("Copied the id|The id is selected"))
    finally:
        context.close()


# --- Two-person approval from the home page --------------------------------------------------


def ask(page: Page, base_url: str, exp: dict) -> None:
    log_in(page, base_url, "pat")
    open_workspace_and_search(page, exp["name"])
    row = page.locator("#results tbody tr").first
    open_dialog(page, row)
    fill_dialog(page)
    page.get_by_role("button", name="Ask for approval").click()
    expect(row.locator("a.chip")).to_contain_text("Awaiting approval", timeout=TIMEOUT_MS)


def test_an_approver_acts_from_the_home_inbox_and_the_counts_follow(
    page: Page, browser: Browser, live_server, standin, approving, pm, second
):
    exp = standin.find(1001, status="active")
    ask(page, live_server.url, exp)
    context = browser.new_context(viewport=LAPTOP)
    context.set_default_timeout(TIMEOUT_MS)
    try:
        other = context.new_page()
        log_in(other, live_server.url, "quinn")
        other.evaluate("window.__noReload = true")
        inbox = other.locator("#needs-approval")
        item = inbox.locator(".inbox-item", has_text=exp["name"])
        expect(item).to_contain_text("Pat (pat) asked at")
        expect(item).to_contain_text("The treatment won clearly.")
        expect(item).to_contain_text("expires")
        expect(other.locator("#inbox-count")).to_contain_text("1")
        expect(other.locator(f"#workspace-counts-{approving.pk}")).to_contain_text("1 awaiting approval")
        item.get_by_label(re.compile("^Note to Pat")).fill("Numbers look right.")
        item.get_by_role("button", name=re.compile("^Approve and force conclude")).click()
        answered = inbox.locator(".inbox-item .success")
        expect(answered).to_contain_text("You approved Pat (pat)'s request. Concluded:", timeout=TIMEOUT_MS)
        expect(answered).to_be_focused()
        # The counts moved in place, without a reload.
        expect(other.locator("#inbox-count")).to_contain_text("0")
        expect(other.locator(f"#workspace-counts-{approving.pk}")).to_contain_text("0 awaiting approval")
        assert other.evaluate("window.__noReload") is True
    finally:
        context.close()
    assert len(standin.requests(method="PUT", path_contains=exp["id"])) == 1
    # The requester's row learns of it by itself (its chip polls).
    expect(page.locator("#results tbody tr").first.locator(".badge")).to_have_text("concluded", timeout=15_000)


def test_a_requester_sees_the_rejection_and_its_note(
    page: Page, browser: Browser, live_server, standin, approving, pm, second
):
    exp = standin.find(1001, status="active")
    ask(page, live_server.url, exp)
    context = browser.new_context(viewport=LAPTOP)
    context.set_default_timeout(TIMEOUT_MS)
    try:
        other = context.new_page()
        log_in(other, live_server.url, "quinn")
        item = other.locator("#needs-approval .inbox-item", has_text=exp["name"])
        item.get_by_role("button", name=re.compile("^Reject")).click()
        expect(item).to_contain_text("Say why you reject it")
        item.get_by_label(re.compile("^Note to Pat")).fill("Wait for the holiday traffic to pass.")
        item.get_by_role("button", name=re.compile("^Reject")).click()
        expect(other.locator("#needs-approval")).to_contain_text("Rejected:", timeout=TIMEOUT_MS)
    finally:
        context.close()
    # The requester's open row turns back into the action, and says why, in place.
    row = page.locator("#results tbody tr").first
    expect(row).to_contain_text("Rejected by Quinn (quinn): Wait for the holiday traffic to pass.", timeout=15_000)
    # On their home page, among their requests, with the note.
    page.goto(live_server.url + reverse("home"))
    own = page.locator("#your-requests .inbox-item", has_text=exp["name"])
    expect(own.locator(".badge")).to_have_text("Rejected")
    expect(own).to_contain_text("Rejected by Quinn (quinn): “Wait for the holiday traffic to pass.”")


def test_the_header_updates_in_place_after_an_approval(
    page: Page, browser: Browser, live_server, standin, approving, pm, second
):
    exp = standin.find(1001, status="active")
    ask(page, live_server.url, exp)
    context = browser.new_context(viewport=LAPTOP)
    context.set_default_timeout(TIMEOUT_MS)
    try:
        other = context.new_page()
        log_in(other, live_server.url, "quinn")
        other.goto(live_server.url + reverse("experiments:experiment-detail", args=[approving.pk, exp["id"]]))
        other.evaluate("window.__noReload = true")
        header = other.locator("#experiment-header")
        expect(header.locator(".badge").first).to_have_text("active")
        section = other.locator("#conclude-section")
        expect(section).to_contain_text("Quinn (quinn) may approve it by")
        section.get_by_role("button", name=re.compile("^Approve and force conclude")).click()
        expect(section).to_contain_text("Force concluded by Pat (pat), approved by Quinn (quinn)", timeout=TIMEOUT_MS)
        expect(header.locator(".badge").first).to_have_text("concluded")
        expect(other.locator("#experiment-end")).not_to_have_text("—")
        assert other.evaluate("window.__noReload") is True
    finally:
        context.close()
    # The requester's experiment page, polling, shows the new status in its header too.
    page.goto(live_server.url + reverse("experiments:experiment-detail", args=[approving.pk, exp["id"]]))
    expect(page.locator("#experiment-header .badge").first).to_have_text("concluded")
