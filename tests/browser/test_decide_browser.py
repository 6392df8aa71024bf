"""Deciding in a real browser: a product manager force concludes an experiment from its page,
sees the page change in place, records "Ship variant treatment" with a note; a viewer is
offered neither action; the audit shows both attempts and verifies."""

from __future__ import annotations

import json
import re
from io import StringIO

import pytest
from django.core.management import call_command
from django.urls import reverse
from playwright.sync_api import Page, expect

from experiments.models import Membership, Role
from tests.browser.signin import log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

NOTE = "Treatment lifted checkout by 3% over three weeks; shipping it."


def an_active_experiment_with_a_treatment(standin) -> dict:
    return next(
        e
        for e in standin.experiments(1001)
        if e["status"] == "active"
        and not e["name"].startswith("[demo fault]")
        and any(isinstance(v, dict) and v.get("key") == "treatment" for v in e.get("variants") or [])
    )


def test_conclude_then_decide_in_place(page: Page, live_server, standin, pm, workspace, django_user_model):
    exp = an_active_experiment_with_a_treatment(standin)
    detail_url = live_server.url + reverse("experiments:experiment-detail", args=[workspace.pk, exp["id"]])
    log_in(page, live_server.url, "pat")
    page.goto(detail_url)
    page.evaluate("window.__noReload = true")
    header = page.locator("#experiment-header")
    expect(header.locator(".badge")).to_have_text("active")
    expect(page.get_by_role("link", name="Record the decision")).to_have_count(0)

    # Force conclude from the page.
    page.get_by_role("link", name=re.compile("^Force conclude")).click()
    expect(page.locator("#force-conclude-form")).to_be_visible()
    page.locator("#force-conclude-form").get_by_label("Reason").select_option("significance")
    page.locator("#force-conclude-form").get_by_label("In your own words").fill("Treatment won clearly.")
    page.locator("#force-conclude-submit").click()

    # In place: header badge, end date, focus on the result, and the next step offered.
    expect(header.locator(".badge")).to_have_text("concluded")
    expect(page.locator("#experiment-end")).not_to_have_text("—")
    notice = page.locator("#conclude-section p.success")
    expect(notice).to_contain_text(re.compile("ended|concluded", re.IGNORECASE))
    expect(notice).to_be_focused()
    assert page.evaluate("window.__noReload") is True

    # Record the decision.
    page.get_by_role("link", name="Record the decision").click()
    dialog = page.locator("#decide-dialog")
    expect(dialog.locator("#decide-form")).to_be_visible()
    expect(dialog.get_by_label("Keep control (ship none)")).to_be_visible()
    expect(dialog).to_contain_text("Mixpanel records a success, with treatment as the winning variant.")
    dialog.get_by_label("Ship variant treatment").check()
    dialog.get_by_label(re.compile("^Note")).fill(NOTE)
    page.locator("#decide-submit").dblclick()  # the second click lands on a disabled button

    expect(header.locator(".badge")).to_have_text("success")
    section = page.locator("#conclude-section")
    expect(section).to_contain_text("Ship variant treatment: recorded by Pat (pat) at")
    expect(section.locator("p.success")).to_be_focused()
    expect(dialog).to_be_hidden()
    assert page.evaluate("window.__noReload") is True

    # Upstream: exactly one PATCH, with the published body.
    patches = standin.requests(method="PATCH", path_contains=exp["id"])
    assert len(patches) == 1
    assert patches[0].path.endswith("/decide")
    assert json.loads(patches[0].body) == {"success": True, "variant": "treatment", "message": NOTE}
    assert standin.experiment(1001, exp["id"])["status"] == "success"

    # The audit list shows both attempts, filterable by action; the trail verifies.
    page.goto(live_server.url + reverse("experiments:audit-list") + "?action=decision")
    rows = page.locator("table tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("Decision")
    expect(rows.first).to_contain_text("Ship variant treatment")
    page.goto(live_server.url + reverse("experiments:audit-list"))
    expect(page.locator("table tbody tr")).to_have_count(2)
    out = StringIO()
    call_command("verify_audit", stdout=out)
    assert "every attempt agrees with its entries" in out.getvalue()

    # A viewer is offered neither action, on a concluded or an active experiment.
    viewer = django_user_model.objects.create_user(username="vic", password="pw-vic", first_name="Vic")
    Membership.objects.create(user=viewer, workspace=workspace, role=Role.VIEWER)
    other = standin.find(1001, status="concluded")
    page.context.clear_cookies()
    log_in(page, live_server.url, "vic")
    for exp_id in (other["id"], an_active_experiment_with_a_treatment(standin)["id"]):
        page.goto(live_server.url + reverse("experiments:experiment-detail", args=[workspace.pk, exp_id]))
        expect(page.locator("#experiment-header")).to_be_visible()
        expect(page.get_by_role("link", name=re.compile("^Force conclude"))).to_have_count(0)
        expect(page.get_by_role("link", name="Record the decision")).to_have_count(0)
