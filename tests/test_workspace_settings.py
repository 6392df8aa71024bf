"""The workspace settings page: admins only, the webhook write-only (its hint shown, never the
address), validation in words, the latest deliveries, and a log line naming who changed what."""

from __future__ import annotations

import logging

import pytest
from django.test import override_settings
from django.urls import reverse

from experiments import auditlog
from experiments.dates import format_utc
from experiments.models import AuditEntry, DeliveryState, EntryKind, NotificationDelivery, Workspace
from experiments.notifications import webhook, webhook_address
from experiments.views.errors import PAGES
from tests.factories import assert_chain_valid, make_attempt, session_queries
from tests.fake_mixpanel import FakeMixpanel, install

pytestmark = pytest.mark.django_db

URL = "https://hooks.slack.com/services/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"
TOKEN = "zQ8kL2mN4pR6sT9uVwXyZab1"
HINT = "https://hooks.slack.com/…Zab1"


def settings_url(workspace) -> str:
    return reverse("experiments:workspace-settings", args=[workspace.pk])


def form(**changes) -> dict[str, str]:
    data = {"webhook_url": "", "email_bookmarkers": "", "requires_approval": "", "approval_window_hours": "24"}
    data.update(changes)
    return {key: value for key, value in data.items() if value != ""}


@pytest.fixture
def admin_client(client, ws_admin):
    client.force_login(ws_admin)
    return client


def fresh(workspace) -> Workspace:
    return Workspace.objects.get(pk=workspace.pk)


# --- Who may open it ---------------------------------------------------------------------


def test_an_admin_sees_the_settings(admin_client, workspace):
    response = admin_client.get(settings_url(workspace))
    assert response.status_code == 200
    page = response.content.decode()
    assert "Notifications" in page
    assert "Two-person approval" in page
    assert "No webhook is set" in page
    assert 'name="approval_window_hours"' in page
    assert 'value="24"' in page


@pytest.mark.parametrize("who", ["pm", "teammate"])
def test_a_concluder_or_viewer_gets_the_readable_403_page(client, workspace, request, who):
    client.force_login(request.getfixturevalue(who))
    for response in (
        client.get(settings_url(workspace)),
        client.post(settings_url(workspace), form(email_bookmarkers="1")),
    ):
        assert response.status_code == 403
        assert PAGES[403][0] in response.content.decode()
    assert fresh(workspace).email_bookmarkers is False


def test_an_outsider_gets_404_and_an_auditor_too(client, workspace, outsider, auditor):
    client.force_login(outsider)
    assert client.get(settings_url(workspace)).status_code == 404
    client.force_login(auditor)
    assert auditor.has_perm("experiments.review_all_conclusions")
    assert client.get(settings_url(workspace)).status_code == 404


def test_a_superuser_may_open_any_workspace_settings(client, workspace, django_user_model):
    root = django_user_model.objects.create_superuser("root", password="x")
    client.force_login(root)
    assert client.get(settings_url(workspace)).status_code == 200


def test_anonymous_is_sent_to_log_in(client, workspace):
    response = client.get(settings_url(workspace))
    assert response.status_code == 302
    assert "login" in response["Location"]


def test_only_admins_see_the_settings_link_in_the_workspace_navigation(client, workspace, pm, ws_admin, monkeypatch):
    install(monkeypatch, FakeMixpanel())
    link = f'href="{settings_url(workspace)}"'
    client.force_login(ws_admin)
    assert link in client.get(reverse("experiments:experiment-list", args=[workspace.pk])).content.decode()
    client.force_login(pm)
    assert link not in client.get(reverse("experiments:experiment-list", args=[workspace.pk])).content.decode()


# --- Saving --------------------------------------------------------------------------------


def test_setting_the_webhook_stores_it_sealed_and_shows_only_its_hint(admin_client, workspace, caplog):
    caplog.set_level(logging.DEBUG)
    response = admin_client.post(settings_url(workspace), form(webhook_url=URL), follow=True)
    assert response.status_code == 200
    page = response.content.decode()
    assert f"Settings saved: webhook set to {HINT}." in page
    assert HINT in page
    ws = fresh(workspace)
    assert ws.webhook_url_hint == HINT
    assert webhook.webhook_open(ws.webhook_url_sealed) == URL
    assert TOKEN not in ws.webhook_url_sealed
    assert TOKEN not in page
    assert TOKEN not in caplog.text
    assert "changed by Ada (ada): webhook set to https://hooks.slack.com/…Zab1" in caplog.text


def test_a_blank_address_keeps_the_webhook_and_the_checkbox_removes_it(admin_client, workspace, caplog):
    admin_client.post(settings_url(workspace), form(webhook_url=URL))
    sealed = fresh(workspace).webhook_url_sealed

    response = admin_client.post(settings_url(workspace), form(email_bookmarkers="1"), follow=True)
    assert "Settings saved: email on." in response.content.decode()
    assert fresh(workspace).webhook_url_sealed == sealed
    assert 'name="remove_webhook"' in response.content.decode()

    with caplog.at_level(logging.INFO):
        admin_client.post(settings_url(workspace), form(email_bookmarkers="1", remove_webhook="1"))
    ws = fresh(workspace)
    assert (ws.webhook_url_sealed, ws.webhook_url_hint) == ("", "")
    assert "changed by Ada (ada): webhook removed." in caplog.text


def test_a_new_address_and_remove_together_are_refused(admin_client, workspace):
    admin_client.post(settings_url(workspace), form(webhook_url=URL))
    response = admin_client.post(
        settings_url(workspace), form(webhook_url=URL.replace("Zab1", "Cde2"), remove_webhook="1")
    )
    assert response.status_code == 200
    assert "Either paste a new webhook address or remove the webhook, not both." in response.content.decode()
    assert fresh(workspace).webhook_url_hint == HINT


def test_approval_settings_are_saved_and_logged(admin_client, workspace, caplog):
    caplog.set_level(logging.INFO)
    response = admin_client.post(
        settings_url(workspace), form(requires_approval="1", approval_window_hours="48"), follow=True
    )
    assert "two-person approval required; approval window 24 h → 48 h" in response.content.decode()
    ws = fresh(workspace)
    assert (ws.requires_approval, ws.approval_window_hours) == (True, 48)
    assert "changed by Ada (ada): two-person approval required; approval window 24 h → 48 h." in caplog.text
    response = admin_client.post(settings_url(workspace), form(requires_approval="1", approval_window_hours="48"))
    assert response.status_code == 302
    assert "Nothing changed." in admin_client.get(settings_url(workspace)).content.decode()


def test_each_change_is_kept_in_the_audit_chain_and_listed_on_the_page(admin_client, workspace):
    admin_client.post(settings_url(workspace), form(webhook_url=URL, requires_approval="1"))
    admin_client.post(settings_url(workspace), form(approval_window_hours="24"))  # approval off, after its delay
    admin_client.post(settings_url(workspace), form())  # nothing changed: no entry
    entries = list(AuditEntry.objects.filter(kind=EntryKind.SETTINGS_CHANGED).order_by("seq"))
    off_at = fresh(workspace).approval_off_at
    assert [e.payload_data["changes"] for e in entries] == [
        [f"webhook set to {HINT}", "two-person approval required"],
        [f"two-person approval turns off at {format_utc(off_at)}, unless an admin keeps it on"],
    ]
    assert entries[1].payload_data["settings"] == {
        "webhook": HINT,
        "email_bookmarkers": False,
        "requires_approval": True,
        "approval_window_hours": 24,
        "approval_off_at": auditlog.format_timestamp(off_at),
        "approval_when": "always",
        **dict.fromkeys(("remind_due", "remind_overdue", "remind_undecided", "remind_no_data"), True),
    }
    assert {(e.workspace_id, e.actor_name) for e in entries} == {(workspace.pk, "Ada (ada)")}
    assert all(TOKEN not in e.payload for e in entries)
    assert_chain_valid()
    html = admin_client.get(settings_url(workspace)).content.decode()
    assert TOKEN not in html
    listed = html[html.index("Recent changes") :]
    assert "Ada (ada): two-person approval turns off at" in listed
    assert listed.index("turns off at") < listed.index("webhook set to")  # newest first


@pytest.mark.parametrize(
    ("url", "message", "marker"),
    [
        ("ftp://hooks.example.com/x-s3cret", webhook_address.MSG_URL_SCHEME, "x-s3cret"),
        ("hooks.slack.com/services/abc-s3cret", webhook_address.MSG_URL_INVALID, "abc-s3cret"),
        ("https:///no-host-s3cret", webhook_address.MSG_URL_HOST, "no-host-s3cret"),
        ("https://hooks.example.com/" + "s3cret" * 400, webhook_address.MSG_URL_TOO_LONG, "s3crets3cret"),
        ("https://hooks.example.com/a\x00b-s3cret", webhook_address.MSG_URL_INVALID, "b-s3cret"),
    ],
)
def test_a_bad_address_is_refused_in_words_and_never_drawn_back(admin_client, workspace, url, message, marker):
    response = admin_client.post(settings_url(workspace), form(webhook_url=url))
    assert response.status_code == 200
    page = response.content.decode()
    assert message in page
    assert 'aria-invalid="true"' in page
    assert marker not in page
    assert fresh(workspace).webhook_url_sealed == ""


def test_a_long_valid_address_is_saved_with_a_hint_that_fits_its_column(admin_client, workspace, fake_dns):
    """Its hint was 81 characters, one more than its column: PostgreSQL refused the row and the page answered 500."""
    host = ".".join(["h" * 63, "o" * 63, "s" * 63, "t" * 53, "example"])
    fake_dns.add(host, "93.184.215.14")
    response = admin_client.post(settings_url(workspace), form(webhook_url=f"https://{host}:65535/services/" + TOKEN))
    assert response.status_code == 302
    ws = fresh(workspace)
    assert ws.webhook_url_hint.startswith("https://hhhh")
    assert ws.webhook_url_hint.endswith(":65535/…Zab1")
    assert len(ws.webhook_url_hint) <= 80


@pytest.mark.parametrize("hours", ["0", "169", "-1", "1.5", "abc", "", "9" * 400])
def test_an_approval_window_outside_1_to_168_hours_is_refused(admin_client, workspace, hours):
    response = admin_client.post(settings_url(workspace), form(approval_window_hours=hours, requires_approval="1"))
    assert response.status_code == 200
    assert "Give the approval window in whole hours, from 1 to 168." in response.content.decode()
    ws = fresh(workspace)
    assert (ws.requires_approval, ws.approval_window_hours) == (False, 24)


def test_a_typed_address_is_hidden_from_error_reports(rf, ws_admin, workspace):
    """sensitive_post_parameters: Django's error reports and debug page show it as stars."""
    from django.views.debug import SafeExceptionReporterFilter

    from experiments.views import settings as settings_views

    request = rf.post(settings_url(workspace), form(webhook_url="ftp://" + TOKEN))
    request.user = ws_admin
    response = settings_views.workspace_settings(request, workspace.pk)
    assert response.status_code == 200  # refused, so nothing was saved
    cleansed = SafeExceptionReporterFilter().get_post_parameters(request)
    assert cleansed["webhook_url"] == SafeExceptionReporterFilter.cleansed_substitute
    assert cleansed["approval_window_hours"] == "24"


@pytest.mark.parametrize("fails_in", ["the form", "the service", "the audit chain"])
def test_the_debug_page_never_shows_a_typed_address(client, ws_admin, workspace, settings, monkeypatch, fails_in):
    """With DEBUG on, Django's 500 page lists every frame's variables, and applied neither
    sensitive_variables nor sensitive_post_parameters: the address showed in full."""
    from experiments import auditlog
    from experiments.notifications import webhook_address as address_module
    from experiments.services import workspaces as workspace_services

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    target = {
        "the form": (address_module, "webhook_url_problem"),
        "the service": (workspace_services, "workspace_settings_update"),
        "the audit chain": (auditlog, "append_entry"),
    }[fails_in]
    monkeypatch.setattr(*target, broken)
    settings.DEBUG = True
    client.raise_request_exception = False
    client.force_login(ws_admin)
    response = client.post(settings_url(workspace), form(webhook_url=URL), HTTP_ACCEPT="text/html")
    assert response.status_code == 500
    page = response.content.decode()
    assert "Local vars" in page  # Django's debug page, frames and all
    assert "RuntimeError" in page
    assert TOKEN not in page


def test_the_page_warns_when_the_saved_webhook_no_longer_opens(admin_client, workspace):
    admin_client.post(settings_url(workspace), form(webhook_url=URL))
    assert "can no longer be read" not in admin_client.get(settings_url(workspace)).content.decode()
    # Sealed under a key this server no longer has (changing SECRET_KEY here would end the session).
    with override_settings(SECRET_KEY="a-retired-secret-key-0123456789-abcdefghijklmnopqrstuv"):
        sealed = webhook.webhook_seal(URL)
    Workspace.objects.filter(pk=workspace.pk).update(webhook_url_sealed=sealed)
    page = admin_client.get(settings_url(workspace)).content.decode()
    assert "can no longer be read" in page
    assert "paste the address again" in page


def test_the_page_says_when_links_are_paths_only(admin_client, workspace, settings):
    settings.DESK_BASE_URL = ""
    assert "set DESK_BASE_URL" in admin_client.get(settings_url(workspace)).content.decode()
    settings.DESK_BASE_URL = "https://desk.example.com"
    assert "DESK_BASE_URL" not in admin_client.get(settings_url(workspace)).content.decode()


# --- The latest deliveries -------------------------------------------------------------------


def test_the_latest_deliveries_are_listed_with_state_tries_error_and_a_link(admin_client, workspace, pm):
    admin_client.post(settings_url(workspace), form(webhook_url=URL))
    attempt = make_attempt(workspace=fresh(workspace), actor=pm, experiment_name="Checkout <b>button</b>")
    NotificationDelivery.objects.update(state=DeliveryState.GAVE_UP, tries=5, last_error="HTTP 500 from the webhook")
    page = admin_client.get(settings_url(workspace)).content.decode()
    assert "Force conclude succeeded" in page
    assert "Gave up" in page
    assert "HTTP 500 from the webhook" in page
    assert HINT in page
    assert reverse("experiments:audit-detail", args=[attempt.pk]) in page
    assert "Checkout &lt;b&gt;button&lt;/b&gt;" in page
    assert "<b>button</b>" not in page


def test_deliveries_are_paged_and_any_page_value_is_answered(admin_client, workspace, pm, settings):
    from experiments.selectors.notifications import DELIVERIES_PER_PAGE

    admin_client.post(settings_url(workspace), form(webhook_url=URL))
    ws = fresh(workspace)
    for n in range(DELIVERIES_PER_PAGE + 1):
        make_attempt(workspace=ws, actor=pm, experiment_id=f"exp-{n}", experiment_name=f"Experiment {n:02d}")
    first = admin_client.get(settings_url(workspace)).content.decode()
    assert f"Experiment {DELIVERIES_PER_PAGE:02d}" in first  # the newest
    assert "Experiment 00<" not in first
    assert "Page 1 of 2" in first
    second = admin_client.get(settings_url(workspace) + "?page=2").content.decode()
    assert "Experiment 00<" in second
    for value in ["0", "-1", "abc", "9" * 400, "1e309", "\x00"]:
        assert admin_client.get(settings_url(workspace), {"page": value}).status_code == 200


def test_deliveries_of_another_workspace_are_not_listed(admin_client, workspace, other_workspace, outsider):
    other_workspace.webhook_url_sealed = webhook.webhook_seal(URL)
    other_workspace.webhook_url_hint = "https://elsewhere.example/…"
    other_workspace.save()
    make_attempt(workspace=other_workspace, actor=outsider, experiment_name="Payments secret test")
    assert NotificationDelivery.objects.filter(workspace=other_workspace).count() == 1
    page = admin_client.get(settings_url(workspace)).content.decode()
    assert "Payments secret test" not in page
    assert "No messages yet" in page


def test_the_settings_page_costs_a_fixed_number_of_queries(admin_client, workspace, pm, django_assert_num_queries):
    """Session, user, membership, then the deliveries: a count and one page (never a query per row)."""
    admin_client.post(settings_url(workspace), form(webhook_url=URL))
    for n in range(5):
        make_attempt(workspace=fresh(workspace), actor=pm, experiment_id=f"exp-{n}")
    assert NotificationDelivery.objects.count() == 5
    # ... and the latest settings changes, from the audit trail.
    with django_assert_num_queries(5 + session_queries()):
        assert admin_client.get(settings_url(workspace)).status_code == 200


def test_the_form_needs_the_csrf_token(client, ws_admin, workspace):
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    strict.force_login(ws_admin)
    response = strict.post(settings_url(workspace), form(email_bookmarkers="1"))
    assert response.status_code == 403
    assert fresh(workspace).email_bookmarkers is False


# --- Loosening the safeguards is never silent ---------------------------------------------


@pytest.fixture
def two_admins(django_user_model, workspace, ws_admin):
    """Ada and Bea admin the workspace, both with an address; Pat (a concluder) has one too."""
    from experiments.models import Membership, Role

    ws_admin.email = "ada@example.com"
    ws_admin.save()
    bea = django_user_model.objects.create_user("bea", email="bea@example.com")
    Membership.objects.create(user=bea, workspace=workspace, role=Role.ADMIN)
    pat = django_user_model.objects.create_user("pat-with-mail", email="pat@example.com")
    Membership.objects.create(user=pat, workspace=workspace, role=Role.CONCLUDER)
    return ws_admin, bea


def told(workspace) -> list[tuple[str, str, str]]:
    rows = NotificationDelivery.objects.filter(workspace=workspace, entry__kind=EntryKind.SETTINGS_CHANGED)
    return sorted(rows.values_list("channel", "recipient", "subject"))


def test_turning_approval_off_tells_every_admin_and_the_webhook(admin_client, workspace, two_admins):
    admin_client.post(settings_url(workspace), form(webhook_url=URL, requires_approval="1"))
    assert told(workspace) == []  # tightening (and a new webhook) is not news to tell
    admin_client.post(settings_url(workspace), form(approval_window_hours="24"))  # approval off
    subject = "Growth: Ada (ada) loosened the workspace's safeguards"
    assert told(workspace) == [
        ("email", "ada@example.com", subject),
        ("email", "bea@example.com", subject),
        ("webhook", HINT, subject),
    ]
    body = NotificationDelivery.objects.filter(channel="email").first().body
    assert "two-person approval will be turned off at" in body
    assert "from then on one person can force conclude alone" in body
    assert settings_url(workspace) in body
    assert_chain_valid()


def test_a_shorter_window_and_a_removed_webhook_are_told_by_email_even_with_email_off(
    admin_client, workspace, two_admins
):
    admin_client.post(settings_url(workspace), form(webhook_url=URL, requires_approval="1", approval_window_hours="48"))
    admin_client.post(settings_url(workspace), form(requires_approval="1", approval_window_hours="12"))
    kept = {"requires_approval": "1", "approval_window_hours": "12"}
    admin_client.post(settings_url(workspace), form(remove_webhook="1", **kept))
    bodies = list(
        NotificationDelivery.objects.filter(channel="email", recipient="bea@example.com")
        .order_by("id")
        .values_list("body", flat=True)
    )
    assert len(bodies) == 2
    assert "the approval window was shortened from 48 h to 12 h" in bodies[0]
    assert f"the webhook {HINT} was removed" in bodies[1]
    assert all(TOKEN not in body for body in bodies)


def test_a_lengthened_window_or_email_turned_on_tells_nobody(admin_client, workspace, two_admins):
    admin_client.post(settings_url(workspace), form(approval_window_hours="72", email_bookmarkers="1"))
    assert told(workspace) == []
    assert AuditEntry.objects.filter(kind=EntryKind.SETTINGS_CHANGED).count() == 1


# --- Trying the notifications ------------------------------------------------------------------


def test_help_says_https_and_owns_up_to_plain_http(admin_client, workspace):
    page = admin_client.get(settings_url(workspace)).content.decode()
    assert "It should start with https://; a plain http:// address is accepted for now" in page


def test_a_test_message_goes_the_same_way_as_every_message_and_is_logged(admin_client, workspace, ws_admin):
    ws_admin.email = "ada@example.com"
    ws_admin.save()
    admin_client.post(settings_url(workspace), form(webhook_url=URL, email_bookmarkers="1"))
    response = admin_client.post(reverse("experiments:workspace-test-message", args=[workspace.pk]), follow=True)
    page = response.content.decode()
    assert f"A test message is on its way to the webhook {HINT} and by email to ada@example.com." in page
    entry = AuditEntry.objects.get(kind=EntryKind.NOTIFICATION_TEST)
    assert entry.actor == ws_admin
    deliveries = NotificationDelivery.objects.filter(entry=entry).order_by("channel")
    assert [(d.channel, d.recipient) for d in deliveries] == [("email", "ada@example.com"), ("webhook", HINT)]
    assert "Ada (ada) sent this test message from the settings of Growth" in deliveries[0].body
    # Listed with the other messages, as a test.
    assert '<td data-label="Event" class="name">Test message</td>' in page
    assert_chain_valid()


def test_a_test_message_with_nowhere_to_go_says_so_and_records_nothing(admin_client, workspace):
    response = admin_client.post(reverse("experiments:workspace-test-message", args=[workspace.pk]), follow=True)
    assert "Nothing was sent: no webhook is set and email is off." in response.content.decode()
    assert not AuditEntry.objects.filter(kind=EntryKind.NOTIFICATION_TEST).exists()


def test_a_test_message_to_an_admin_without_an_address_says_so(admin_client, workspace):
    admin_client.post(settings_url(workspace), form(email_bookmarkers="1"))
    response = admin_client.post(reverse("experiments:workspace-test-message", args=[workspace.pk]), follow=True)
    assert "email is on but your account has no email address" in response.content.decode()
    assert not NotificationDelivery.objects.exists()


def test_only_admins_send_test_messages_and_only_by_post(client, pm, workspace):
    client.force_login(pm)
    url = reverse("experiments:workspace-test-message", args=[workspace.pk])
    assert client.post(url).status_code == 403
    assert client.get(url).status_code == 405
    assert not AuditEntry.objects.filter(kind=EntryKind.NOTIFICATION_TEST).exists()


def test_with_email_on_the_page_says_how_many_can_be_reached(admin_client, workspace, ws_admin, pm, teammate):
    assert (
        "people concerned"
        not in admin_client.get(settings_url(workspace)).content.decode().split("Email the people concerned")[1]
    )
    admin_client.post(settings_url(workspace), form(email_bookmarkers="1"))
    page = admin_client.get(settings_url(workspace)).content.decode()
    assert "0 of 3 people concerned have an email address: no email will be sent until someone adds one" in page
    pm.email = "pat@example.com"
    pm.save()
    page = admin_client.get(settings_url(workspace)).content.decode()
    assert "1 of 3 people concerned has an email address." in page
