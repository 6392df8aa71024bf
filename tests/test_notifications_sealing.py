"""A workspace's webhook URL is a secret: stored only sealed, shown only as a hint, and never
in an exception, a log line or a page; a seal made under a rotated key still opens.

What of the URL is shown, and where it may be posted, is tests/test_webhook_address.py's."""

from __future__ import annotations

import logging

import pytest

from experiments.notifications import webhook
from experiments.notifications.webhook import WebhookUnreadable

URL = "https://hooks.slack.com/services/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"
TOKEN = "zQ8kL2mN4pR6sT9uVwXyZab1"


def test_a_sealed_url_opens_to_itself_and_does_not_contain_it():
    sealed = webhook.webhook_seal(URL)
    assert webhook.webhook_open(sealed) == URL
    assert TOKEN not in sealed
    assert "hooks.slack.com" not in sealed
    # Fernet is randomised: the same URL sealed twice gives two different texts.
    assert webhook.webhook_seal(URL) != sealed


def test_a_seal_under_another_key_does_not_open(settings):
    sealed = webhook.webhook_seal(URL)
    settings.SECRET_KEY = "another-secret-key-entirely-0123456789-abcdefghijklmnop"
    settings.SECRET_KEY_FALLBACKS = []
    with pytest.raises(WebhookUnreadable) as info:
        webhook.webhook_open(sealed)
    assert str(info.value) == webhook.MSG_WEBHOOK_UNREADABLE
    assert "set the webhook again" in str(info.value)
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__
    assert webhook.webhook_readable(sealed) is False


def test_a_seal_made_before_a_key_rotation_opens_with_the_fallback_and_new_seals_use_the_new_key(settings):
    old_key = settings.SECRET_KEY
    sealed_before = webhook.webhook_seal(URL)
    settings.SECRET_KEY = "the-new-secret-key-after-rotation-0123456789-abcdefghij"
    settings.SECRET_KEY_FALLBACKS = [old_key]
    assert webhook.webhook_open(sealed_before) == URL
    sealed_after = webhook.webhook_seal(URL)
    settings.SECRET_KEY_FALLBACKS = []
    assert webhook.webhook_open(sealed_after) == URL
    assert webhook.webhook_readable(sealed_before) is False


@pytest.mark.parametrize("garbage", ["", "not a token", "gAAAAA" + "x" * 40, "é"])
def test_garbage_in_the_sealed_column_is_unreadable_not_an_error(garbage):
    with pytest.raises(WebhookUnreadable):
        webhook.webhook_open(garbage)


def test_no_exception_about_a_url_carries_it(settings):
    sealed = webhook.webhook_seal(URL)
    settings.SECRET_KEY = "yet-another-secret-key-0123456789-abcdefghijklmnopqrstu"
    with pytest.raises(WebhookUnreadable) as info:
        webhook.webhook_open(sealed)
    texts = [str(info.value), repr(info.value), repr(info.value.args)]
    assert not [t for t in texts if TOKEN in t or "hooks.slack.com" in t]


def test_posting_to_a_webhook_logs_nothing_of_its_url_even_at_debug(caplog, webhook_receiver):
    caplog.set_level(logging.DEBUG)
    assert webhook.post_webhook(webhook_receiver.url, "hello") == ("", False)
    webhook_receiver.answer_with(500)
    assert webhook.post_webhook(webhook_receiver.url, "hello") == ("HTTP 500 from the webhook", True)
    refused = "http://127.0.0.1:9/services/" + webhook_receiver.token
    assert webhook.post_webhook(refused, "hello") == ("could not be delivered", True)
    assert len(webhook_receiver.messages()) == 2
    assert webhook_receiver.token not in caplog.text
    assert "/services/" not in caplog.text


@pytest.mark.django_db
def test_the_saved_webhook_is_nowhere_in_the_workspace_its_deliveries_or_the_admin(
    client, workspace, pm, django_user_model
):
    from django.urls import reverse

    from experiments.models import NotificationDelivery
    from experiments.services import workspaces
    from tests.factories import make_attempt

    workspaces.workspace_settings_update(
        workspace=workspace,
        user=pm,
        webhook_url=URL,
        remove_webhook=False,
        email_bookmarkers=False,
        requires_approval=False,
        approval_window_hours=24,
    )
    make_attempt(workspace=workspace, actor=pm)
    delivery = NotificationDelivery.objects.get()
    texts = [str(workspace), repr(workspace), str(delivery), repr(delivery), delivery.body, delivery.subject]
    texts += [delivery.recipient, workspace.webhook_url_hint, workspace.webhook_url_sealed]
    assert not [t for t in texts if TOKEN in t]
    root = django_user_model.objects.create_superuser("root", password="x")
    client.force_login(root)
    page = client.get(reverse("admin:experiments_workspace_change", args=[workspace.pk])).content.decode()
    assert workspace.webhook_url_hint in page
    assert workspace.webhook_url_sealed not in page
    assert 'name="webhook_url_sealed"' not in page


# --- Rotating the secret key ------------------------------------------------------------------

OLD_KEY = "the-old-secret-key-before-rotation-0123456789-abcdefghij"
NEW_KEY = "the-new-secret-key-after-rotation-0123456789-abcdefghijk"


def _settings_in_a_new_process(**env: str) -> str:
    """SECRET_KEY_FALLBACKS as dashboard/settings.py reads them from this environment."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = "import django; django.setup(); from django.conf import settings; print(settings.SECRET_KEY_FALLBACKS)"
    environ = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_SECRET_KEY_FALLBACKS")}
    environ.update(DJANGO_SETTINGS_MODULE="dashboard.settings", DJANGO_SECRET_KEY=NEW_KEY, **env)
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).resolve().parent.parent,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


def test_the_secret_key_fallbacks_are_read_from_the_environment_or_a_file(tmp_path):
    """The docs promised that older keys still open their seals; no setting read them."""
    assert _settings_in_a_new_process() == "[]"
    assert _settings_in_a_new_process(DJANGO_SECRET_KEY_FALLBACKS=f"{OLD_KEY}, second-old-key") == str(
        [OLD_KEY, "second-old-key"]
    )
    mounted = tmp_path / "fallbacks"
    mounted.write_text(f"{OLD_KEY}\nsecond-old-key\n")
    assert _settings_in_a_new_process(DJANGO_SECRET_KEY_FALLBACKS_FILE=str(mounted)) == str([OLD_KEY, "second-old-key"])


@pytest.mark.django_db
def test_after_a_rotation_the_next_message_is_sent_and_moves_its_seal_to_the_new_key(
    workspace, pm, webhook_receiver, settings
):
    from experiments.models import Workspace
    from tests.factories import make_attempt
    from tests.test_notifications import run_notification_tasks, webhook_on

    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = OLD_KEY, []
    webhook_on(workspace, webhook_receiver.url)
    make_attempt(workspace=workspace, actor=pm)
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = NEW_KEY, [OLD_KEY]

    assert [r.return_value for r in run_notification_tasks()] == ["sent"]
    assert len(webhook_receiver.messages()) == 1
    settings.SECRET_KEY_FALLBACKS = []  # the old key is gone: the webhook still opens
    assert webhook.webhook_open(Workspace.objects.get(pk=workspace.pk).webhook_url_sealed) == webhook_receiver.url


@pytest.mark.django_db
def test_the_reseal_command_seals_every_webhook_under_the_new_key_and_names_the_unreadable(
    workspace, other_workspace, settings
):
    from io import StringIO

    from django.core.management import CommandError, call_command

    from experiments.models import Region, Workspace

    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = OLD_KEY, []
    old_seal = webhook.webhook_seal(URL)
    Workspace.objects.filter(pk=workspace.pk).update(webhook_url_sealed=old_seal, webhook_url_hint="https://a/…")
    lost = Workspace.objects.create(
        name="Lost", region=Region.US, mixpanel_workspace_id=9, webhook_url_sealed="gAAAA-garbage", webhook_url_hint="x"
    )
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = NEW_KEY, [OLD_KEY]
    Workspace.objects.filter(pk=other_workspace.pk).update(webhook_url_sealed=webhook.webhook_seal(URL))

    out = StringIO()
    with pytest.raises(CommandError, match="Unreadable, set them again on the Settings page: Lost"):
        call_command("reseal_webhooks", stdout=out)
    text = out.getvalue()
    assert f"Growth (#{workspace.pk}): webhook https://a/… sealed again under the current key" in text
    assert "Payments" in text
    assert "already sealed under the current key" in text
    assert f"Lost (#{lost.pk})" in text
    assert TOKEN not in text
    settings.SECRET_KEY_FALLBACKS = []
    for ws in (workspace, other_workspace):
        assert webhook.webhook_open(Workspace.objects.get(pk=ws.pk).webhook_url_sealed) == URL
    # With the unreadable one gone, every seal is current: nothing to do, and no failure.
    Workspace.objects.filter(pk=lost.pk).delete()
    call_command("reseal_webhooks", stdout=StringIO())
