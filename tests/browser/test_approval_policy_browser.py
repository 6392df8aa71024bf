"""The approval policy in a real browser: in a workspace where two-person approval applies
when risky, a press before the planned length asks for approval and the dialog and the answer
name the rule; a press on an experiment past its planned length concludes at once."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect

from experiments.models import AttemptState, ConclusionAttempt
from tests.browser.signin import log_in
from tests.browser.test_force_conclude_browser import TIMEOUT_MS, fill_dialog, open_dialog, open_workspace_and_search
from tests.factories import workspace_settings_set

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

RULE = "Needs approval: the planned length (14 days) is not reached — 9 days run"


def planned(standin, name: str, *, days_ago: int) -> dict:
    """An active experiment planned for 14 days, started `days_ago` days ago, exposed as planned."""
    start = timezone.now() - dt.timedelta(days=days_ago, hours=1)
    return standin.add_experiment(
        1001,
        name=name,
        status="active",
        start_date=start.strftime("%Y-%m-%dT%H:%M:%SZ"),
        settings={"feature_flag_key": None, "duration_days": 14},
        exposures_cache={"control": 5000, "treatment": 5010},
    )


def test_when_risky_an_early_press_asks_and_names_the_rule_and_a_late_one_concludes(
    page: Page, live_server, standin, workspace, pm
):
    workspace_settings_set(workspace, requires_approval=True, approval_when="risky")
    early = planned(standin, "Policy banner before its planned length", days_ago=9)
    late = planned(standin, "Policy banner past its planned length", days_ago=20)

    log_in(page, live_server.url, "pat")
    open_workspace_and_search(page, early["name"])
    row = page.locator("#results tbody tr").first
    open_dialog(page, row)
    dialog = page.locator("#force-conclude-dialog")
    # Said before anyone presses.
    expect(dialog.locator("#force-conclude-approval")).to_contain_text(RULE)
    fill_dialog(page)
    page.get_by_role("button", name="Ask for approval").click()
    expect(page.locator("#toasts")).to_contain_text("Asked for approval", timeout=TIMEOUT_MS)
    expect(page.locator("#toasts")).to_contain_text("the planned length (14 days) is not reached")
    expect(row.locator("a.chip")).to_contain_text("Awaiting approval")
    assert standin.requests(method="PUT", path_contains=early["id"]) == []
    asked = ConclusionAttempt.objects.get(experiment_id=early["id"])
    assert asked.state == AttemptState.AWAITING_APPROVAL
    assert [rule["rule"] for rule in asked.approval_rules] == ["before_planned_length"]

    page.goto(live_server.url + "/")
    open_workspace_and_search(page, late["name"])
    row = page.locator("#results tbody tr").first
    open_dialog(page, row)
    expect(dialog.locator("#force-conclude-approval")).to_contain_text("No approval needed")
    fill_dialog(page)
    page.get_by_role("button", name="Force conclude", exact=True).click()
    expect(page.locator("#toasts")).to_contain_text("Concluded:", timeout=TIMEOUT_MS)
    expect(row.locator(".badge")).to_have_text("concluded")
    assert len(standin.requests(method="PUT", path_contains=late["id"])) == 1
