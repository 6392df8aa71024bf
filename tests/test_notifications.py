"""Notifications: which audit entries become messages and to whom, what they say, and the task
that sends them (a local webhook receiver on 127.0.0.1 and Django's in-memory outbox).

A notification never changes, delays or rolls back the outcome it tells about: with
notifications off the hook runs no query, and a failure while queueing is logged and the
outcome commits anyway.
"""

from __future__ import annotations

import datetime as dt
import logging

import pytest
from django.core import mail
from django.db import connection
from django.tasks import TaskResultStatus
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from experiments import auditlog
from experiments.mixpanel.errors import MixpanelOutcomeUnknown
from experiments.models import (
    AttemptState,
    AuditEntry,
    Bookmark,
    BookmarkKind,
    ConclusionAttempt,
    DeliveryChannel,
    DeliveryState,
    EntryKind,
    Membership,
    NotificationDelivery,
    Role,
)
from experiments.notifications import deliveries as notification_deliveries
from experiments.notifications import email as email_channel
from experiments.notifications import webhook
from experiments.services import attempts as attempt_services
from tests.factories import assert_chain_valid, make_attempt, workspace_settings_set
from tests.fake_mixpanel import EXP_ID, FakeMixpanel, raw_experiment
from tests.test_reconcile import press
from tests.test_services_decide import decide
from tests.test_tasks import make_due, run_ready_tasks, waiting

pytestmark = pytest.mark.django_db


def webhook_on(workspace, url: str) -> None:
    workspace_settings_set(workspace, webhook_url=url)


def email_on(workspace) -> None:
    workspace_settings_set(workspace, email_bookmarkers=True)


def bookmark(workspace, user, experiment_id: str = EXP_ID) -> Bookmark:
    return Bookmark.objects.create(
        workspace=workspace,
        kind=BookmarkKind.EXPERIMENT,
        experiment_id=experiment_id,
        created_by=user,
        created_by_name=str(user),
    )


def person(django_user_model, workspace, username: str, role: str | None, **extra):
    user = django_user_model.objects.create_user(
        username=username, password="x", first_name=username.title(), email=f"{username}@example.com", **extra
    )
    if role:
        Membership.objects.create(user=user, workspace=workspace, role=role)
    return user


def with_address(user, address: str = "pat@example.com"):
    user.email = address
    user.save()
    return user


def deliveries(**filters) -> list[NotificationDelivery]:
    return list(NotificationDelivery.objects.filter(**filters).order_by("id"))


def notification_tasks() -> list[DBTaskResult]:
    return [t for t in waiting() if t.task_path == "experiments.notifications.deliveries.deliver_notification"]


def run_notification_tasks() -> list[DBTaskResult]:
    """Run what is due; the reconcile tasks queued with each press are not due yet."""
    return [r for r in run_ready_tasks() if r.task_path == "experiments.notifications.deliveries.deliver_notification"]


# --- Which entries are told ----------------------------------------------------------------


def test_a_succeeded_force_conclude_queues_one_webhook_message_and_a_task(workspace, pm, webhook_receiver):
    webhook_on(workspace, webhook_receiver.url)
    outcome = press(workspace, pm, FakeMixpanel())
    assert outcome.state == AttemptState.SUCCEEDED

    (delivery,) = deliveries()
    assert delivery.entry.kind == EntryKind.CONCLUSION_SUCCEEDED
    assert delivery.attempt == outcome.attempt
    assert delivery.channel == DeliveryChannel.WEBHOOK
    assert delivery.recipient == workspace.webhook_url_hint
    assert delivery.state == DeliveryState.PENDING
    assert webhook_receiver.token not in delivery.recipient + delivery.body + delivery.subject
    (queued,) = notification_tasks()
    assert queued.args_kwargs["args"] == [delivery.pk]
    assert webhook_receiver.messages() == []  # sent by the worker, not by the press


@pytest.mark.parametrize(
    ("outcome", "reconciled", "told"),
    [
        (AttemptState.SUCCEEDED, None, [EntryKind.CONCLUSION_SUCCEEDED]),
        (AttemptState.FAILED, None, [EntryKind.CONCLUSION_FAILED]),
        (AttemptState.UNKNOWN, None, [EntryKind.CONCLUSION_UNKNOWN]),
        (AttemptState.UNKNOWN, "applied", [EntryKind.CONCLUSION_UNKNOWN, EntryKind.CONCLUSION_RECONCILED]),
        (AttemptState.UNKNOWN, "not_applied", [EntryKind.CONCLUSION_UNKNOWN, EntryKind.CONCLUSION_RECONCILED]),
        (None, None, []),  # only "requested" so far: its outcome will be told
    ],
)
def test_every_outcome_is_told_and_a_request_is_not(workspace, pm, outcome, reconciled, told):
    webhook_on(workspace, "https://hooks.example.com/services/abcdefghijklmnopqrstuvwx")
    make_attempt(workspace=workspace, actor=pm, outcome=outcome, reconciled=reconciled)
    assert [d.entry.kind for d in deliveries()] == told
    assert len(notification_tasks()) == len(told)


def test_decisions_are_told_like_conclusions(workspace, pm):
    webhook_on(workspace, "https://hooks.example.com/services/abcdefghijklmnopqrstuvwx")
    fake = FakeMixpanel([raw_experiment(status="concluded", end_date="2026-11-20T10:00:00Z")])
    outcome = decide(workspace, pm, fake)
    assert outcome.ok, outcome.message
    (delivery,) = deliveries()
    assert delivery.entry.kind == EntryKind.DECISION_SUCCEEDED
    assert "recorded the decision on" in delivery.body
    assert "ship variant green" in delivery.body


def test_a_late_answer_is_not_told(workspace, pm):
    attempt = make_attempt(workspace=workspace, actor=pm, outcome=AttemptState.UNKNOWN, reconciled="applied")
    webhook_on(workspace, "https://hooks.example.com/services/abcdefghijklmnopqrstuvwx")
    attempt = ConclusionAttempt.objects.select_related("workspace").get(pk=attempt.pk)
    recorded = attempt_services.attempt_record_outcome(
        attempt=attempt, state=AttemptState.SUCCEEDED, message="", release_claim=False, evidence={}
    )
    assert recorded is False
    assert AuditEntry.objects.filter(kind=EntryKind.CONCLUSION_LATE_ANSWER).count() == 1
    assert deliveries() == []


def test_a_refused_second_press_is_not_told_but_the_first_is(workspace, pm):
    webhook_on(workspace, "https://hooks.example.com/services/abcdefghijklmnopqrstuvwx")
    first = press(workspace, pm, FakeMixpanel(put=("apply", MixpanelOutcomeUnknown())))
    second = press(workspace, pm, FakeMixpanel())
    assert second.state == "blocked"
    assert [(d.attempt_id, d.entry.kind) for d in deliveries()] == [(first.attempt.pk, EntryKind.CONCLUSION_UNKNOWN)]


@pytest.mark.parametrize("kind", sorted(notification_deliveries.NOTIFIED_KINDS))
def test_with_notifications_off_the_hook_runs_no_query(workspace, pm, kind, django_assert_num_queries):
    attempt = make_attempt(workspace=workspace, actor=pm, outcome=None)
    entry = AuditEntry.objects.filter(attempt=attempt).get()
    entry.kind = kind  # in memory only: the hook reads the kind it is given
    attempt = ConclusionAttempt.objects.select_related("workspace").get(pk=attempt.pk)
    with django_assert_num_queries(0):
        notification_deliveries.entry_recorded(entry=entry, attempt=attempt)


def test_with_notifications_on_an_entry_that_is_not_told_runs_no_query(workspace, pm, django_assert_num_queries):
    webhook_on(workspace, "https://hooks.example.com/services/abcdefghijklmnopqrstuvwx")
    email_on(workspace)
    attempt = make_attempt(workspace=workspace, actor=pm, outcome=None)
    entry = AuditEntry.objects.filter(attempt=attempt).get()
    attempt = ConclusionAttempt.objects.select_related("workspace").get(pk=attempt.pk)
    with django_assert_num_queries(0):
        notification_deliveries.entry_recorded(entry=entry, attempt=attempt)
    # The counting is real: the same call for an outcome does write.
    entry.kind = EntryKind.CONCLUSION_SUCCEEDED
    with CaptureQueriesContext(connection) as told:
        notification_deliveries.entry_recorded(entry=entry, attempt=attempt)
    assert len(told.captured_queries) >= 3  # savepoint, recipients, deliveries, task, release
    assert len(deliveries()) == 1


def test_a_press_costs_the_same_queries_with_notifications_off_as_without_the_hook(workspace, pm, monkeypatch):
    """The whole press, counted twice: with the hook, and with the hook replaced by nothing
    (on a second experiment, so the first one's claim does not refuse it)."""
    with CaptureQueriesContext(connection) as with_hook:
        press(workspace, pm, FakeMixpanel([raw_experiment("exp-a")]), experiment_id="exp-a")
    monkeypatch.setattr(notification_deliveries, "entry_recorded", lambda **kwargs: None)
    with CaptureQueriesContext(connection) as without_hook:
        press(workspace, pm, FakeMixpanel([raw_experiment("exp-b")]), experiment_id="exp-b")
    assert ConclusionAttempt.objects.filter(state=AttemptState.SUCCEEDED).count() == 2
    assert len(with_hook.captured_queries) == len(without_hook.captured_queries)


def test_a_database_error_while_queueing_leaves_the_outcome_recorded(workspace, pm, monkeypatch, caplog):
    webhook_on(workspace, "https://hooks.example.com/services/abcdefghijklmnopqrstuvwx")

    def broken_queue(**kwargs):
        # A real error from the database, inside the hook's savepoint: on PostgreSQL it
        # would poison the outcome's transaction if the savepoint did not contain it.
        with connection.cursor() as cursor:
            cursor.execute("SELECT * FROM no_such_table_for_notifications")

    monkeypatch.setattr(notification_deliveries, "deliver_notification_later", broken_queue)
    fake = FakeMixpanel()
    with caplog.at_level(logging.ERROR, logger="experiments.notifications.deliveries"):
        outcome = press(workspace, pm, fake)

    assert outcome.ok, outcome.message
    attempt = ConclusionAttempt.objects.get()
    assert attempt.state == AttemptState.SUCCEEDED
    kinds = list(AuditEntry.objects.filter(attempt=attempt).order_by("seq").values_list("kind", flat=True))
    assert kinds == [EntryKind.CONCLUSION_REQUESTED, EntryKind.CONCLUSION_SUCCEEDED]
    assert deliveries() == []  # the savepoint took the delivery rows with it
    assert len(fake.puts) == 1
    assert "Could not queue the notifications" in caplog.text
    assert_chain_valid()


def test_a_bug_while_rendering_a_message_leaves_the_outcome_recorded(workspace, pm, monkeypatch, caplog):
    webhook_on(workspace, "https://hooks.example.com/services/abcdefghijklmnopqrstuvwx")

    def broken(**kwargs):
        raise KeyError("a bug")

    monkeypatch.setattr(notification_deliveries, "notification_message", broken)
    outcome = press(workspace, pm, FakeMixpanel())
    assert outcome.ok
    assert ConclusionAttempt.objects.get().state == AttemptState.SUCCEEDED
    assert deliveries() == []
    assert "Could not queue the notifications" in caplog.text


# --- Approval steps (the entries two-person approval appends through the same function) ------


def approval_entry(attempt, kind, **by):
    attempt_services.attempt_append_entry(attempt, kind, {"note": "test"}, **by)
    return AuditEntry.objects.filter(attempt=attempt, kind=kind).get()


@pytest.fixture
def crew(django_user_model, workspace):
    """The requester, a second concluder, an admin, a viewer, an inactive concluder, and an
    admin without an email address."""
    crew = {
        "requester": person(django_user_model, workspace, "rita", Role.CONCLUDER),
        "concluder": person(django_user_model, workspace, "carl", Role.CONCLUDER),
        "admin": person(django_user_model, workspace, "adam", Role.ADMIN),
        "viewer": person(django_user_model, workspace, "vera", Role.VIEWER),
        "gone": person(django_user_model, workspace, "gus", Role.CONCLUDER, is_active=False),
        "no_email": with_address(person(django_user_model, workspace, "nell", Role.ADMIN), ""),
    }
    return crew


def test_a_request_for_approval_emails_the_requester_and_every_possible_approver(workspace, crew):
    email_on(workspace)
    attempt = make_attempt(workspace=workspace, actor=crew["requester"], outcome=None)
    attempt.expires_at = timezone.now() + dt.timedelta(hours=24)
    entry = approval_entry(attempt, EntryKind.APPROVAL_REQUESTED)

    assert email_channel.email_recipients(entry=entry, attempt=attempt, workspace=workspace) == [
        "adam@example.com",
        "carl@example.com",
        "rita@example.com",
    ]
    sent_to = sorted(d.recipient for d in deliveries(channel=DeliveryChannel.EMAIL))
    assert sent_to == ["adam@example.com", "carl@example.com", "rita@example.com"]
    body = deliveries()[0].body
    assert "Rita (rita) asks for a second person's approval to force conclude" in body
    assert "Approve or reject by:" in body


@pytest.mark.parametrize("kind", [EntryKind.APPROVAL_APPROVED, EntryKind.APPROVAL_REJECTED, EntryKind.APPROVAL_EXPIRED])
def test_the_end_of_a_request_emails_the_requester_only(workspace, crew, kind):
    email_on(workspace)
    attempt = make_attempt(workspace=workspace, actor=crew["requester"], outcome=None)
    attempt.review_note = "Looks right" if kind != EntryKind.APPROVAL_EXPIRED else ""
    reviewer = crew["admin"]
    approval_entry(attempt, kind, actor=reviewer, actor_name=auditlog.display_name(reviewer))
    (delivery,) = deliveries()
    assert delivery.recipient == "rita@example.com"
    if kind == EntryKind.APPROVAL_APPROVED:
        assert "Adam (adam) approved Rita (rita)'s request to force conclude" in delivery.body
        assert "Reviewer's note: Looks right" in delivery.body
    elif kind == EntryKind.APPROVAL_REJECTED:
        assert "Adam (adam) rejected" in delivery.body
    else:
        assert "expired without approval; nothing was sent" in delivery.body


def test_an_outcome_emails_whoever_bookmarked_the_experiment(workspace, django_user_model, pm):
    email_on(workspace)
    fan = person(django_user_model, workspace, "fay", Role.VIEWER)
    bookmark(workspace, fan)
    other = person(django_user_model, workspace, "olga", Role.ADMIN)
    bookmark(workspace, other, experiment_id="exp-b")  # another experiment

    press(workspace, pm, FakeMixpanel())

    assert [d.recipient for d in deliveries()] == ["fay@example.com"]
    assert deliveries()[0].entry.kind == EntryKind.CONCLUSION_SUCCEEDED


def test_a_bookmarker_who_is_no_longer_a_member_is_not_emailed(workspace, django_user_model, pm):
    email_on(workspace)
    leaver = person(django_user_model, workspace, "lee", Role.VIEWER)
    bookmark(workspace, leaver)
    Membership.objects.filter(user=leaver).delete()
    press(workspace, pm, FakeMixpanel())
    assert deliveries() == []
    # A superuser sees every workspace without a membership, so is still told.
    leaver.is_superuser = True
    leaver.save()
    press(workspace, pm, FakeMixpanel([raw_experiment("exp-b")]), experiment_id="exp-b")
    Bookmark.objects.update(experiment_id="exp-c")
    assert deliveries() == []
    press(workspace, pm, FakeMixpanel([raw_experiment("exp-c")]), experiment_id="exp-c")
    assert [d.recipient for d in deliveries()] == ["lee@example.com"]


def test_an_outcome_with_nobody_to_email_and_no_webhook_makes_no_delivery(workspace, pm):
    email_on(workspace)
    press(workspace, pm, FakeMixpanel())
    assert deliveries() == []
    assert notification_tasks() == []


def test_inactive_people_and_people_without_an_address_are_not_emailed(workspace, django_user_model, pm):
    email_on(workspace)
    gone = person(django_user_model, workspace, "gus", Role.CONCLUDER, is_active=False)
    bookmark(workspace, gone)
    press(workspace, pm, FakeMixpanel())
    assert deliveries() == []
    assert pm.email == ""
    bookmark(workspace, pm, experiment_id="exp-b")
    press(workspace, pm, FakeMixpanel([raw_experiment("exp-b")]), experiment_id="exp-b")
    assert deliveries() == []


# --- What a message says -------------------------------------------------------------------


def test_a_message_says_what_happened_to_which_experiment_where_by_whom_with_a_link(workspace, pm, settings):
    settings.DESK_BASE_URL = "https://desk.example.com"
    webhook_on(workspace, "https://hooks.example.com/services/abcdefghijklmnopqrstuvwx")
    attempt = make_attempt(workspace=workspace, actor=pm, outcome=AttemptState.FAILED, error="Mixpanel was down.")
    (delivery,) = deliveries()
    assert delivery.subject == "Growth: Force conclude failed, “Checkout button colour”"
    text = delivery.body
    assert "Force concluding “Checkout button colour” in Growth failed; nothing was changed in Mixpanel." in text
    assert "Pressed by: Pat (pat)" in text
    assert "Reason: Reached significance: Significant after two weeks" in text
    assert "What happened: Mixpanel was down." in text
    assert f"See the attempt: https://desk.example.com/audit/{attempt.pk}/" in text


def test_webhook_text_escapes_slack_markup_in_names_from_mixpanel(workspace, pm, webhook_receiver):
    webhook_on(workspace, webhook_receiver.url)
    name = "<!channel> Free & <https://evil.example|click here>"
    make_attempt(workspace=workspace, actor=pm, experiment_name=name)
    run_notification_tasks()
    (message,) = webhook_receiver.messages()
    assert message.content_type == "application/json"
    text = message.text
    assert "&lt;!channel&gt; Free &amp; &lt;https://evil.example|click here&gt;" in text
    assert "<!channel>" not in text
    assert "<https://" not in text
    assert text.startswith("*Growth: Force conclude succeeded,")


@pytest.mark.parametrize(
    ("name", "live"),
    [
        ("Pricing @channel test", "@channel"),
        ("Pricing @here test", "@here"),
        ("Pricing @everyone test", "@everyone"),
        ("Pricing @ALL test", "@ALL"),
        ("See [the results](https://evil.example/phish)", "](https://"),
        ("Logo ![pixel](https://evil.example/track.png)", "](https://"),
        ("Ref [the results][1]", "]["),
        ("[1]: https://evil.example/phish", "]:"),
    ],
)
def test_webhook_text_makes_mentions_and_markdown_links_from_mixpanel_inert(
    workspace, pm, webhook_receiver, name, live
):
    """Slack ignores these, but Mattermost, Rocket.Chat and Discord (also "Slack-compatible")
    ping the whole channel on @channel/@here/@everyone/@all and draw Markdown links and images."""
    webhook_on(workspace, webhook_receiver.url)
    make_attempt(workspace=workspace, actor=pm, experiment_name=name)
    run_notification_tasks()
    (message,) = webhook_receiver.messages()
    assert live not in message.text
    # Still readable: the same words, with an invisible space where the markup was.
    assert name.replace("\u200b", "") in message.text.replace("\u200b", "")


def test_email_is_plain_text_and_a_name_with_line_breaks_cannot_add_a_header(workspace, pm):
    email_on(workspace)
    with_address(pm)
    bookmark(workspace, pm)
    make_attempt(
        workspace=workspace, actor=pm, experiment_id=EXP_ID, experiment_name="Evil\nBcc: all@example.com <b>x</b>"
    )
    run_notification_tasks()
    (sent,) = mail.outbox
    assert sent.to == ["pat@example.com"]
    assert sent.subject == "Growth: Force conclude succeeded, “Evil Bcc: all@example.com <b>x</b>”"
    message = sent.message()
    assert message["Bcc"] is None
    assert message["To"] == "pat@example.com"
    assert sent.content_subtype == "plain"
    assert message.get_content_type() == "text/plain"
    assert "<b>x</b>" in sent.body  # plain text: nothing to escape


# --- The task: sending, retrying, giving up ---------------------------------------------------


def test_the_task_posts_the_message_and_records_it_sent(workspace, pm, webhook_receiver):
    webhook_on(workspace, webhook_receiver.url)
    make_attempt(workspace=workspace, actor=pm)
    ran = run_notification_tasks()
    assert [(r.status, r.return_value) for r in ran] == [(TaskResultStatus.SUCCESSFUL, DeliveryState.SENT)]
    (message,) = webhook_receiver.messages()
    assert message.path == "/services/" + webhook_receiver.token
    assert set(message.json) == {"text"}
    (delivery,) = deliveries()
    assert (delivery.state, delivery.tries, delivery.last_error) == (DeliveryState.SENT, 1, "")
    assert delivery.sent_at is not None
    assert delivery.updated_at >= delivery.created_at
    assert message.text == delivery.body
    # Run again: nothing more is sent.
    assert notification_deliveries.delivery_send(delivery_id=delivery.pk) == "already sent"
    assert len(webhook_receiver.messages()) == 1


def test_a_webhook_answering_500_is_tried_again_doubling_the_wait_then_given_up(
    workspace, pm, webhook_receiver, settings, caplog
):
    settings.NOTIFY_MAX_TRIES = 3
    settings.NOTIFY_BACKOFF_SECONDS = 30
    webhook_on(workspace, webhook_receiver.url)
    webhook_receiver.answer_with(500)
    attempt = make_attempt(workspace=workspace, actor=pm)
    before = attempt.state, attempt.finished_at

    states, waits = [], []
    for _ in range(3):
        started = timezone.now()
        (result,) = run_notification_tasks()
        states.append(result.return_value)
        later = notification_tasks()
        if later:
            (retry,) = later
            waits.append(round((retry.run_after - started).total_seconds()))
            make_due(retry)
    assert states == [DeliveryState.FAILED, DeliveryState.FAILED, DeliveryState.GAVE_UP]
    assert waits == [30, 60]
    assert notification_tasks() == []  # gave up: nothing more queued
    assert len(webhook_receiver.messages()) == 3
    (delivery,) = deliveries()
    assert (delivery.state, delivery.tries) == (DeliveryState.GAVE_UP, 3)
    assert delivery.last_error == "HTTP 500 from the webhook"
    assert delivery.sent_at is None
    # The conclusion it tells about is exactly as it was.
    attempt.refresh_from_db()
    assert (attempt.state, attempt.finished_at) == before
    assert_chain_valid()
    assert "gave up" in caplog.text
    assert webhook_receiver.token not in caplog.text


def test_a_failed_try_then_a_working_webhook_is_sent(workspace, pm, webhook_receiver):
    webhook_on(workspace, webhook_receiver.url)
    webhook_receiver.answer_with(503)
    make_attempt(workspace=workspace, actor=pm)
    assert [r.return_value for r in run_notification_tasks()] == [DeliveryState.FAILED]
    webhook_receiver.answer_with(200)
    make_due(notification_tasks()[0])
    assert [r.return_value for r in run_notification_tasks()] == [DeliveryState.SENT]
    (delivery,) = deliveries()
    assert (delivery.state, delivery.tries) == (DeliveryState.SENT, 2)


@pytest.mark.parametrize(
    ("setup", "error"),
    [
        # What a person needs, never which ports answer: the same words for no answer and a refusal.
        ("timeout", "could not be delivered"),
        ("refused", "could not be delivered"),
        ("redirect", "HTTP 302 from the webhook (a redirect; redirects are not followed)"),
        ("not_found", "HTTP 404 from the webhook"),
    ],
)
def test_each_failure_is_described_without_the_url(workspace, pm, webhook_receiver, settings, caplog, setup, error):
    caplog.set_level(logging.DEBUG)
    settings.NOTIFY_WEBHOOK_TIMEOUT = 0.3
    url = webhook_receiver.url
    if setup == "timeout":
        webhook_receiver.delay = 1.0
    elif setup == "refused":
        url = "http://127.0.0.1:9/services/" + webhook_receiver.token
    elif setup == "redirect":
        webhook_receiver.answer_with(302)
    else:
        webhook_receiver.answer_with(404)
    webhook_on(workspace, url)
    make_attempt(workspace=workspace, actor=pm)
    (result,) = run_notification_tasks()
    (delivery,) = deliveries()
    assert delivery.last_error == error
    assert delivery.state == DeliveryState.FAILED
    texts = [delivery.last_error, caplog.text, str(result.return_value), str(result.traceback or "")]
    assert not [t for t in texts if webhook_receiver.token in t]
    if setup == "redirect":
        assert len(webhook_receiver.messages()) == 1  # the redirect was not followed


def test_a_webhook_sealed_under_an_old_key_gives_up_at_once_and_says_to_set_it_again(
    workspace, pm, webhook_receiver, settings
):
    webhook_on(workspace, webhook_receiver.url)
    make_attempt(workspace=workspace, actor=pm)
    settings.SECRET_KEY = "a-rotated-secret-key-without-fallback-0123456789abcdef"
    settings.SECRET_KEY_FALLBACKS = []
    assert [r.return_value for r in run_notification_tasks()] == [DeliveryState.GAVE_UP]
    (delivery,) = deliveries()
    assert delivery.last_error == webhook.MSG_WEBHOOK_UNREADABLE
    assert delivery.tries == 1
    assert webhook_receiver.messages() == []


def test_a_webhook_removed_before_sending_gives_up(workspace, pm, webhook_receiver):
    webhook_on(workspace, webhook_receiver.url)
    make_attempt(workspace=workspace, actor=pm)
    workspace.webhook_url_sealed = workspace.webhook_url_hint = ""
    workspace.save()
    assert [r.return_value for r in run_notification_tasks()] == [DeliveryState.GAVE_UP]
    assert deliveries()[0].last_error == webhook.MSG_WEBHOOK_REMOVED


def test_a_waiting_message_goes_to_the_webhook_set_since(workspace, pm, webhook_receiver):
    webhook_on(workspace, "http://127.0.0.1:9/services/old-and-broken-address-0000")
    make_attempt(workspace=workspace, actor=pm)
    webhook_on(workspace, webhook_receiver.url)
    assert [r.return_value for r in run_notification_tasks()] == [DeliveryState.SENT]
    assert len(webhook_receiver.messages()) == 1
    assert deliveries()[0].recipient == workspace.webhook_url_hint


def test_email_is_sent_through_the_outbox_and_recorded(workspace, pm):
    email_on(workspace)
    with_address(pm)
    bookmark(workspace, pm)
    attempt = make_attempt(workspace=workspace, actor=pm, experiment_id=EXP_ID)
    assert [r.return_value for r in run_notification_tasks()] == [DeliveryState.SENT]
    (sent,) = mail.outbox
    assert sent.to == ["pat@example.com"]
    assert sent.subject == "Growth: Force conclude succeeded, “Checkout button colour”"
    assert f"/audit/{attempt.pk}/" in sent.body
    assert "Pat (pat) force concluded “Checkout button colour” in Growth" in sent.body
    (delivery,) = deliveries()
    assert (delivery.channel, delivery.state, delivery.tries) == (DeliveryChannel.EMAIL, DeliveryState.SENT, 1)


def test_a_mail_server_that_cannot_be_reached_is_a_failed_try(workspace, pm, monkeypatch):
    email_on(workspace)
    with_address(pm)
    bookmark(workspace, pm)

    def unreachable(*args, **kwargs):
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(email_channel, "send_mail", unreachable)
    make_attempt(workspace=workspace, actor=pm, experiment_id=EXP_ID)
    assert [r.return_value for r in run_notification_tasks()] == [DeliveryState.FAILED]
    assert deliveries()[0].last_error == email_channel.MSG_MAIL_NO_CONNECTION


def test_a_missing_delivery_is_nothing_to_do():
    assert notification_deliveries.delivery_send(delivery_id=987654) == "missing"


def test_webhook_and_email_together_are_two_deliveries_sent_independently(workspace, pm, webhook_receiver):
    webhook_on(workspace, webhook_receiver.url)
    email_on(workspace)
    with_address(pm)
    bookmark(workspace, pm)
    webhook_receiver.answer_with(500)
    make_attempt(workspace=workspace, actor=pm, experiment_id=EXP_ID)
    results = sorted(r.return_value for r in run_notification_tasks())
    assert results == [DeliveryState.FAILED, DeliveryState.SENT]
    assert len(mail.outbox) == 1
    by_channel = {d.channel: d.state for d in deliveries()}
    assert by_channel == {DeliveryChannel.WEBHOOK: DeliveryState.FAILED, DeliveryChannel.EMAIL: DeliveryState.SENT}


# --- Through the real two-person approval ------------------------------------------------------


@pytest.fixture
def approving(workspace, crew):
    workspace_settings_set(
        workspace,
        requires_approval=True,
        email_bookmarkers=True,
        webhook_url="https://hooks.example.com/services/abcdefghijklmnopqrstuvwx",
    )
    return workspace


def ask(workspace, requester, fake):
    from tests.test_services_force_conclude import conclude

    outcome = conclude(workspace, requester, fake)
    assert outcome.state == AttemptState.AWAITING_APPROVAL
    return ConclusionAttempt.objects.get(pk=outcome.attempt.pk)


def told(kind) -> list[tuple[str, str]]:
    return sorted((d.channel, d.recipient) for d in deliveries(entry__kind=kind))


def test_an_approved_request_tells_each_step_and_the_outcome(approving, crew):
    from experiments.services import approvals

    fake = FakeMixpanel()
    bookmark(approving, crew["viewer"])
    attempt = ask(approving, crew["requester"], fake)
    hook = ("webhook", approving.webhook_url_hint)
    assert told(EntryKind.APPROVAL_REQUESTED) == [
        ("email", "adam@example.com"),
        ("email", "carl@example.com"),
        ("email", "rita@example.com"),
        hook,
    ]

    outcome = approvals.attempt_review(
        attempt=attempt, user=crew["concluder"], decision=approvals.APPROVE, note="Looks right.", client=fake
    )
    assert outcome.ok, outcome.message
    assert told(EntryKind.APPROVAL_APPROVED) == [("email", "rita@example.com"), hook]
    assert told(EntryKind.CONCLUSION_SUCCEEDED) == [("email", "vera@example.com"), hook]
    approved = deliveries(entry__kind=EntryKind.APPROVAL_APPROVED, channel=DeliveryChannel.EMAIL)[0].body
    assert "Carl (carl) approved Rita (rita)'s request to force conclude" in approved
    assert "Reviewer's note: Looks right." in approved
    succeeded = deliveries(entry__kind=EntryKind.CONCLUSION_SUCCEEDED, channel=DeliveryChannel.EMAIL)[0].body
    assert "Pressed by: Rita (rita)" in succeeded
    assert "Approved by: Carl (carl)" in succeeded
    assert len(fake.puts) == 1
    assert_chain_valid()


def test_a_rejected_and_a_withdrawn_request_are_told_to_the_requester(approving, crew):
    from experiments.services import approvals

    fake = FakeMixpanel()
    attempt = ask(approving, crew["requester"], fake)
    approvals.attempt_review(
        attempt=attempt, user=crew["admin"], decision=approvals.REJECT, note="Too early to tell.", client=fake
    )
    (rejected,) = deliveries(entry__kind=EntryKind.APPROVAL_REJECTED, channel=DeliveryChannel.EMAIL)
    assert rejected.recipient == "rita@example.com"
    assert "Adam (adam) rejected Rita (rita)'s request" in rejected.body
    assert "Reviewer's note: Too early to tell." in rejected.body

    attempt = ask(approving, crew["requester"], fake)
    approvals.attempt_review(attempt=attempt, user=crew["requester"], decision=approvals.REJECT, note="", client=fake)
    # A withdrawal is told as one, to the requester and to everyone who was asked to approve.
    assert told(EntryKind.APPROVAL_WITHDRAWN) == [
        ("email", "adam@example.com"),
        ("email", "carl@example.com"),
        ("email", "rita@example.com"),
        ("webhook", approving.webhook_url_hint),
    ]
    withdrawn = deliveries(entry__kind=EntryKind.APPROVAL_WITHDRAWN, channel=DeliveryChannel.EMAIL)[-1]
    assert withdrawn.subject.startswith("Growth: Request withdrawn,")
    assert "Rita (rita) withdrew their request to force conclude" in withdrawn.body
    assert fake.puts == []


def test_an_expired_request_is_told_to_the_requester_and_sends_nothing(approving, crew):
    from tests.factories import _clock_shifted

    fake = FakeMixpanel()
    ask(approving, crew["requester"], fake)
    with _clock_shifted(dt.timedelta(hours=24, seconds=1)):
        (expiry,) = [t for t in waiting() if t.task_path.endswith("expire_request")]
        make_due(expiry)
        results = {r.task_path.rsplit(".", 1)[1]: r.return_value for r in run_ready_tasks()}
    assert results["expire_request"] == "expired"
    assert told(EntryKind.APPROVAL_EXPIRED) == [("email", "rita@example.com"), ("webhook", approving.webhook_url_hint)]
    (email,) = deliveries(entry__kind=EntryKind.APPROVAL_EXPIRED, channel=DeliveryChannel.EMAIL)
    assert "expired without approval; nothing was sent" in email.body
    assert fake.puts == []


def test_a_press_refused_while_a_request_waits_is_not_told(approving, crew):
    fake = FakeMixpanel()
    ask(approving, crew["requester"], fake)
    from tests.test_services_force_conclude import conclude

    refused = conclude(approving, crew["concluder"], fake)
    assert refused.state == "blocked"
    assert deliveries(attempt=refused.attempt) == []


# --- A slow receiver holds up nothing else --------------------------------------------------------


def _worker(queue: str, *, max_tasks: int | None = None):
    """A worker of one queue, as `db_worker --queue-name QUEUE --batch` runs it."""
    from django_tasks_db.management.commands.db_worker import Worker

    return Worker(
        queue_names=[queue],
        interval=0,
        batch=True,
        backend_name="default",
        startup_delay=False,
        max_tasks=max_tasks,
        worker_id="worker-" + queue,
        excluded_queue_names=[],
    )


def test_deliveries_have_a_queue_of_their_own(workspace, pm, webhook_receiver):
    webhook_on(workspace, webhook_receiver.url)
    press(workspace, pm, FakeMixpanel())
    by_queue = sorted((t.queue_name, t.task_path.rsplit(".", 1)[1]) for t in waiting())
    assert by_queue == [("default", "reconcile_attempt"), ("notifications", "deliver_notification")]


@pytest.mark.django_db(transaction=True)
def test_a_dripping_webhook_is_cut_off_at_its_deadline_while_a_reconcile_runs_on_time(
    workspace, pm, webhook_receiver, settings, monkeypatch
):
    """The two workers as make serve runs them, at once: the notifications worker's post to a
    receiver dripping its answer ends at NOTIFY_WEBHOOK_TIMEOUT, and meanwhile the default
    worker runs the reconcile that was due. Before, one worker ran both queues' tasks in turn
    and a dripping receiver held it for as long as it dripped."""
    import threading
    import time

    from tests.factories import made_long_ago
    from tests.fake_mixpanel import install

    settings.NOTIFY_WEBHOOK_TIMEOUT = 2.0
    webhook_receiver.drip = 0.25  # a 60-byte answer: 15 s if nobody stops it
    webhook_on(workspace, webhook_receiver.url)
    fake = install(monkeypatch, FakeMixpanel(put=("apply", MixpanelOutcomeUnknown())))
    with made_long_ago():
        outcome = press(workspace, pm, fake)  # its reconcile task is due at once
    assert outcome.state == AttemptState.UNKNOWN
    assert len(notification_tasks()) == 1

    posting: dict[str, float] = {}

    def notifications_worker() -> None:
        posting["started"] = time.monotonic()
        _worker("notifications", max_tasks=1).run()
        posting["ended"] = time.monotonic()

    thread = threading.Thread(target=notifications_worker)
    thread.start()
    for _ in range(200):  # until the receiver holds the post
        if webhook_receiver.messages():
            break
        time.sleep(0.01)
    _worker("default").run()  # everything due on its queue, then it stops
    still_posting = thread.is_alive()
    thread.join(10)

    assert ConclusionAttempt.objects.get().state == AttemptState.RECONCILED_APPLIED
    assert still_posting  # the reconcile ran to its end while the post was still held
    # Cut at the deadline: the receiver would have dripped its answer for 15 s.
    assert posting["ended"] - posting["started"] < 7.5
    delivery = deliveries(entry__kind=EntryKind.CONCLUSION_UNKNOWN)[0]
    assert (delivery.state, delivery.last_error) == (DeliveryState.FAILED, "could not be delivered")
