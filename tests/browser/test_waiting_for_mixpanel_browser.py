"""A press whose answer was lost, in a real browser: the row says it is waiting for Mixpanel and
updates by itself once the worker's reconcile task has read the experiment; a press in flight is
not "cancelled" by the dialog's Cancel."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.db.models import F
from playwright.sync_api import Page, expect

from experiments.models import AttemptState, ConclusionAttempt
from experiments.services import reconcile as reconcile_services
from tests.browser.test_force_conclude_browser import (
    TIMEOUT_MS,
    fill_dialog,
    log_in,
    open_dialog,
    open_workspace_and_search,
)
from tests.test_tasks import make_due, run_ready_tasks, waiting

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_an_unknown_outcome_resolves_in_the_browser_by_itself(page: Page, live_server, standin, pm, workspace):
    exp = next(e for e in standin.experiments(1001) if e["name"].startswith("[demo fault] Mixpanel applies the change"))
    log_in(page, live_server.url)
    open_workspace_and_search(page, "applies the change")
    page.evaluate("window.__noReload = true")
    row = page.locator("#results tbody tr").first
    open_dialog(page, row)
    fill_dialog(page)
    page.locator("#force-conclude-submit").click()

    # The row stays one line: a chip with who and when in its tooltip, and its one action. The
    # answer's message is the page's one notice, in words that raise no alarm.
    chip = row.locator("a.chip[data-poll]")
    expect(chip).to_contain_text("Answer lost: checking")
    expect(chip).to_have_attribute("title", re.compile(r"Sent at [\d-]+ \d\d:\d\d UTC by Pat \(pat\)"))
    expect(page.locator("#toasts")).to_contain_text("no trustworthy answer came back")
    expect(row.locator(".error")).to_have_count(0)
    expect(row.get_by_role("button", name="Check Mixpanel now")).to_be_visible()
    assert row.bounding_box()["height"] <= 64
    attempt = ConclusionAttempt.objects.get()
    assert attempt.state == AttemptState.UNKNOWN

    # Too early, "Check Mixpanel now" says so and reads nothing.
    reads = len(standin.requests(method="GET", path_contains=exp["id"]))
    row.get_by_role("button", name="Check Mixpanel now").click()
    expect(page.locator("#toasts")).to_contain_text("Too early to tell", timeout=TIMEOUT_MS)
    assert len(standin.requests(method="GET", path_contains=exp["id"])) == reads

    # Time passes (the in-flight limit), and the worker runs the task queued with the press.
    limit = reconcile_services.in_flight_limit() + dt.timedelta(seconds=1)
    ConclusionAttempt.objects.update(created_at=F("created_at") - limit)
    (queued,) = waiting()
    make_due(queued)
    assert [r.return_value for r in run_ready_tasks()] == ["applied"]

    # Nobody touches the page: its poll brings the outcome in, and polling stops.
    expect(row.locator(".badge")).to_have_text(re.compile("concluded|success|fail"), timeout=TIMEOUT_MS)
    expect(page.locator("#toasts")).to_contain_text("was applied")
    expect(row.locator("[data-poll]")).to_have_count(0)
    assert page.evaluate("window.__noReload") is True
    assert len(standin.requests(method="PUT", path_contains=exp["id"])) == 1


def test_cancel_during_a_press_only_closes_and_the_row_says_it_is_on_its_way(
    page: Page, live_server, standin, pm, workspace
):
    exp = standin.find(1001, status="active")
    standin.set_fault("latency", experiment_id=exp["id"], method="PUT", latency_ms=2500)
    log_in(page, live_server.url)
    open_workspace_and_search(page, exp["name"])
    row = page.locator("#results tbody tr").first
    open_dialog(page, row)
    fill_dialog(page)
    page.locator("#force-conclude-submit").click()

    cancel = page.locator("#force-conclude-dialog [data-close-dialog]")
    expect(cancel).to_have_text(re.compile("already sent"))
    cancel.click()
    expect(page.locator("#force-conclude-dialog")).to_be_hidden()
    expect(row.locator("[data-press-on-its-way]")).to_be_visible()
    expect(row).to_contain_text("on its way to Mixpanel")

    # The press was not cancelled: its answer lands in the row.
    expect(row.locator(".badge")).to_have_text("concluded", timeout=TIMEOUT_MS)
    expect(row).to_contain_text("Concluded by Pat (pat) at")
    assert len(standin.requests(method="PUT", path_contains=exp["id"])) == 1
