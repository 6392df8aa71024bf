"""The approval policy in a real browser: in a workspace where two-person approval applies
when risky, a press before the planned length asks for approval and the dialog and the answer
name the rule; a press on an experiment past its planned length concludes at once."""

from __future__ import annotations

import datetime as dt

import pytest
from django.urls import reverse
from django.utils import timezone
from playwright.sync_api import Browser, Page, expect

from experiments.models import AttemptState, ConclusionAttempt
from tests.browser.signin import log_in
from tests.browser.test_accessibility_browser import AXE_PATH, WIDTHS, AxeReport, make_user
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


def test_the_policy_choices_and_the_dialogs_read_well_for_axe_at_both_widths(
    browser: Browser, live_server, standin, workspace, django_user_model
):
    workspace_settings_set(workspace, requires_approval=True, approval_when="risky")
    make_user(django_user_model, "admin", workspace)
    early = planned(standin, "Policy banner before its planned length", days_ago=9)
    ended = standin.add_experiment(
        1001,
        name="Policy banner concluded early",
        status="concluded",
        start_date=(timezone.now() - dt.timedelta(days=20)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        end_date=(timezone.now() - dt.timedelta(days=11)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        settings={"feature_flag_key": None, "duration_days": 14},
        results_cache={"Conversion": {"treatment": {"lift": -0.02}}},
    )
    report = AxeReport()
    context = browser.new_context(viewport=WIDTHS["desktop"])
    context.add_init_script(path=str(AXE_PATH))
    context.set_default_timeout(TIMEOUT_MS)
    try:
        page = context.new_page()
        log_in(page, live_server.url, "admin")
        for width, size in WIDTHS.items():
            page.set_viewport_size(size)
            report.width = width
            page.goto(live_server.url + reverse("experiments:workspace-settings", args=[workspace.pk]))
            expect(page.get_by_role("radio", name="When risky")).to_be_checked()
            report.check(page, "admin: settings with the approval policy")

            page.goto(live_server.url + reverse("experiments:experiment-detail", args=[workspace.pk, early["id"]]))
            page.locator("[data-open-dialog=force-conclude-dialog]").first.click()
            expect(page.locator("#force-conclude-approval")).to_contain_text(RULE)
            report.check(page, "admin: force-conclude dialog naming the rule", within="#force-conclude-dialog")
            page.keyboard.press("Escape")

            page.goto(live_server.url + reverse("experiments:experiment-detail", args=[workspace.pk, ended["id"]]))
            page.get_by_role("link", name="Record the decision").click()
            expect(page.locator("#decide-form")).to_contain_text("ended before its planned length (14 days)")
            report.check(page, "admin: decision dialog with each choice's verdict", within="#decide-dialog")
            page.keyboard.press("Escape")
    finally:
        context.close()
    report.assert_clean()
