"""Decisions owed in a real browser: Chromium, the live dashboard, the Mixpanel stand-in over HTTP
and a local webhook receiver. Pat belongs to two workspaces; one has an experiment running long
past its planned end, the other one concluded weeks ago and never decided. The home page lists
both first, with the right reasons; the worker's housekeeping reads the lists and the webhook
hears one reminder for each, and no second one however often the worker looks again."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from playwright.sync_api import Page, expect

from experiments.models import DigestPeriod, Membership, Role
from experiments.services.worker import Housekeeping
from tests.browser.signin import log_in
from tests.test_notifications import webhook_on
from tests.test_tasks import run_ready_tasks

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

LATE = "Owed browser: long past its plan"
UNDECIDED = "Owed browser: concluded, never decided"


def iso(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_the_home_page_lists_what_is_owed_and_the_webhook_hears_once_of_each(
    page: Page, live_server, standin, pm, workspace, other_workspace, webhook_receiver, settings
):
    settings.DESK_BASE_URL = live_server.url
    Membership.objects.create(user=pm, workspace=other_workspace, role=Role.VIEWER)
    now = dt.datetime.now(dt.UTC)
    # The longest owed of each workspace, so they are among the first reminders it sends.
    standin.add_experiment(
        1001,
        name=LATE,
        status="active",
        start_date=iso(now - dt.timedelta(days=3000)),
        settings={"duration_days": 14},
        creator_name="Gail Growth",
    )
    standin.add_experiment(
        2002,
        name=UNDECIDED,
        status="concluded",
        start_date=iso(now - dt.timedelta(days=3100)),
        end_date=iso(now - dt.timedelta(days=3000)),
        creator_name="Pia Payments",
    )
    for ws in (workspace, other_workspace):
        webhook_on(ws, webhook_receiver.url)
    # This week's digest counts as sent, so the webhook hears only the reminders here.
    year, week, _ = now.isocalendar()
    DigestPeriod.objects.create(year=year, week=week)

    log_in(page, live_server.url)
    owed = page.locator("#decisions-owed")
    expect(owed.get_by_role("heading", name="Decisions owed")).to_be_visible()
    late_row = owed.locator("tr", has_text=LATE)
    expect(late_row.locator('td[data-label="Why"]')).to_have_text("Overdue")
    expect(late_row.locator('td[data-label="Workspace"]')).to_have_text("Growth")
    expect(late_row.locator('td[data-label="Owner"]')).to_have_text("Gail Growth")
    expect(late_row.get_by_role("link", name=re.compile(r"^Open to conclude\W+" + re.escape(LATE)))).to_be_visible()
    undecided_row = owed.locator("tr", has_text=UNDECIDED)
    expect(undecided_row.locator('td[data-label="Why"]')).to_have_text("Concluded, not decided")
    expect(undecided_row.locator('td[data-label="Workspace"]')).to_have_text("Payments")
    expect(
        undecided_row.get_by_role("link", name=re.compile(r"^Open to decide\W+" + re.escape(UNDECIDED)))
    ).to_be_visible()
    # It comes first on the page.
    assert page.locator("main h2").first.inner_text().startswith("Decisions owed")

    # The worker looks (its housekeeping reads both lists again), then looks again.
    housekeeping = Housekeeping(worker_id="browser-test")
    housekeeping.tick()
    run_ready_tasks()
    housekeeping.tick()
    run_ready_tasks()
    texts = [message.text for message in webhook_receiver.received]
    assert sum(LATE in text for text in texts) == 1
    assert sum(UNDECIDED in text for text in texts) == 1
    (late_text,) = [text for text in texts if LATE in text]
    assert "Growth: overdue" in late_text
    (undecided_text,) = [text for text in texts if UNDECIDED in text]
    assert "Payments: concluded, not decided" in undecided_text

    # Clicking the action opens the experiment where it is settled.
    late_row.get_by_role("link", name=re.compile(r"^Open to conclude\W+" + re.escape(LATE))).click()
    expect(page.get_by_role("heading", level=1, name=LATE)).to_be_visible()
