"""Notifications in a real browser: an admin points the workspace's webhook at a local receiver
on the settings page; a concluder force concludes; the worker's task posts exactly one message
about that outcome. With the receiver answering 500 the conclusion stays exactly as recorded,
and the admin sees the delivery fail, then give up, on the settings page."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse
from playwright.sync_api import Browser, Page, expect

from experiments.models import AttemptState, AuditEntry, ConclusionAttempt, DeliveryState, NotificationDelivery
from tests.browser.signin import TIMEOUT_MS
from tests.test_tasks import make_due, run_ready_tasks, waiting

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def signed_in_page(browser: Browser, base_url: str, username: str) -> Page:
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(base_url + reverse("login"))
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill("pw-" + username)
    page.get_by_role("button", name=re.compile("log in", re.IGNORECASE)).click()
    expect(page.get_by_role("heading", name="Your workspaces")).to_be_visible()
    return page


def force_conclude(page: Page, base_url: str, workspace, experiment: dict) -> None:
    page.goto(base_url + reverse("experiments:experiment-detail", args=[workspace.pk, experiment["id"]]))
    page.locator("[data-open-dialog=force-conclude-dialog]").first.click()
    expect(page.locator("#force-conclude-form")).to_be_visible()
    page.locator("#force-conclude-form").get_by_label("Reason").select_option("significance")
    page.locator("#force-conclude-form").get_by_label("In your own words").fill("The treatment won clearly.")
    page.locator("#force-conclude-submit").click()
    expect(page.locator("#conclude-section p.success")).to_contain_text("Concluded")


def run_notification_tasks() -> list[str]:
    """The worker's turn: the notification tasks due now (each press's reconcile task is not due yet)."""
    ran = run_ready_tasks()
    paths = [r.task_path for r in ran]
    assert all(path == "experiments.notifications.deliveries.deliver_notification" for path in paths), paths
    return [r.return_value for r in ran]


def test_the_webhook_hears_once_per_outcome_and_a_failing_one_changes_nothing(
    browser: Browser, live_server, standin, workspace, pm, ws_admin, webhook_receiver, settings
):
    settings.NOTIFY_MAX_TRIES = 2
    settings.DESK_BASE_URL = live_server.url
    base = live_server.url

    # The admin finds Settings in the workspace's navigation and sets the webhook.
    admin = signed_in_page(browser, base, "ada")
    admin.get_by_role("link", name="Growth", exact=True).click()
    admin.get_by_role("navigation", name="Workspace").get_by_role("link", name="Settings").click()
    expect(admin.get_by_role("heading", name="Settings")).to_be_visible()
    admin.get_by_label("Webhook address").fill(webhook_receiver.url)
    admin.get_by_role("button", name="Save settings").click()
    expect(admin.locator("#messages")).to_contain_text("Settings saved: webhook set to http://127.0.0.1:")
    hint = admin.locator(".webhook-hint")
    expect(hint).to_have_text(re.compile(r"^http://127\.0\.0\.1:\d+/…" + re.escape(webhook_receiver.token[-4:]) + "$"))
    assert webhook_receiver.token not in admin.content()
    expect(admin.get_by_label("Webhook address")).to_have_value("")

    # A concluder force concludes; the worker runs the queued task; one message arrives.
    concluder = signed_in_page(browser, base, "pat")
    first = standin.find(1001, status="active")
    force_conclude(concluder, base, workspace, first)
    assert webhook_receiver.messages() == []  # the press did not wait on the webhook
    assert run_notification_tasks() == [DeliveryState.SENT]
    (message,) = webhook_receiver.messages()
    attempt = ConclusionAttempt.objects.get(experiment_id=first["id"])
    assert "Pat (pat) force concluded" in message.text
    assert "in Growth" in message.text
    assert f"{base}/audit/{attempt.pk}/" in message.text
    assert run_notification_tasks() == []  # exactly one message for that outcome

    # Now the receiver fails: the next conclusion is recorded exactly as it would be anyway.
    webhook_receiver.answer_with(500)
    second = standin.find(1001, status="active")
    force_conclude(concluder, base, workspace, second)
    attempt = ConclusionAttempt.objects.get(experiment_id=second["id"])
    recorded = (attempt.state, attempt.finished_at, attempt.failure_reason)
    entries = list(AuditEntry.objects.filter(attempt=attempt).values_list("seq", "hash"))
    assert attempt.state == AttemptState.SUCCEEDED

    assert run_notification_tasks() == [DeliveryState.FAILED]
    admin.reload()
    row = admin.locator(".deliveries-table tbody tr").first
    expect(row).to_contain_text("Failed, will retry")
    expect(row).to_contain_text("HTTP 500 from the webhook")
    (retry,) = [t for t in waiting() if t.task_path == "experiments.notifications.deliveries.deliver_notification"]
    make_due(retry)
    assert run_notification_tasks() == [DeliveryState.GAVE_UP]

    attempt.refresh_from_db()
    assert (attempt.state, attempt.finished_at, attempt.failure_reason) == recorded
    assert list(AuditEntry.objects.filter(attempt=attempt).values_list("seq", "hash")) == entries
    assert standin.experiment(1001, second["id"])["status"] == "concluded"
    assert len(standin.requests(method="PUT", path_contains=second["id"])) == 1
    concluder.reload()
    expect(concluder.locator("#conclude-section")).to_contain_text("Force concluded by Pat (pat)")

    admin.reload()
    row = admin.locator(".deliveries-table tbody tr").first
    expect(row).to_contain_text("Gave up")
    expect(row).to_contain_text("HTTP 500 from the webhook")
    expect(row.locator("td[data-label=Tries]")).to_have_text("2")
    expect(row.get_by_role("link")).to_have_attribute("href", f"/audit/{attempt.pk}/")
    assert len(webhook_receiver.messages()) == 3  # one sent, two refused tries
    delivery = NotificationDelivery.objects.get(attempt=attempt)
    assert (delivery.state, delivery.tries) == (DeliveryState.GAVE_UP, 2)
    assert webhook_receiver.token not in admin.content()


def test_a_concluder_is_refused_the_settings_page_in_words(browser: Browser, live_server, standin, workspace, pm):
    page = signed_in_page(browser, live_server.url, "pat")
    page.get_by_role("link", name="Growth", exact=True).click()
    expect(page.get_by_role("navigation", name="Workspace").get_by_role("link", name="Settings")).to_have_count(0)
    page.goto(live_server.url + reverse("experiments:workspace-settings", args=[workspace.pk]))
    expect(page.locator("main h1")).to_have_text("You do not have access to this")
