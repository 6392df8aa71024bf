"""Notifications: telling a workspace's team how a conclusion or decision ended, and each
step of a two-person approval, by a Slack-compatible webhook and by email.

Three parts, in the order a message lives:
  1. `entry_recorded` is called for every audit entry of an attempt, in the entry's
     transaction. For an entry worth telling (NOTIFIED_KINDS) in a workspace that has a
     webhook or email turned on, it writes one NotificationDelivery per place (the
     message rendered once, here) and queues a task for each, inside a savepoint: if
     anything about it fails, the failure is logged and the entry, the outcome and the
     rest of their transaction commit as if notifications did not exist. With
     notifications off it runs no query at all.
  2. `delivery_send` (run by the task experiments.tasks.deliver_notification, in the
     worker) sends one delivery outside any transaction, then records how it went:
     sent, failed (tried again later, doubling the wait) or, after NOTIFY_MAX_TRIES,
     gave up. Nothing here ever writes to the attempt or its entries.
  3. The webhook URL is a secret (whoever holds it can post into the channel): it is
     stored only sealed (Fernet, under a key derived from SECRET_KEY, with
     SECRET_KEY_FALLBACKS still opening older seals) and shown only as a hint. Errors
     are described in our own words, never with the exception's text, which for
     requests names the URL.
"""

from __future__ import annotations

import base64
import contextvars
import datetime as dt
import logging
import smtplib
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables

from experiments import tasks
from experiments.dates import format_utc
from experiments.models import (
    AttemptAction,
    AttemptState,
    AuditEntry,
    Bookmark,
    BookmarkKind,
    ConclusionAttempt,
    DeliveryChannel,
    DeliveryState,
    EntryKind,
    NotificationDelivery,
    ReasonCategory,
    Role,
    Workspace,
)
from experiments.observability import log_context

# A module import, not names: conclusions -> attempts -> here runs while conclusions loads.
from experiments.services import conclusions as conclusion_services

logger = logging.getLogger(__name__)

# How an attempt ended (for conclusions and decisions alike), and the approval steps.
OUTCOME_KINDS = frozenset(
    {
        EntryKind.CONCLUSION_SUCCEEDED,
        EntryKind.CONCLUSION_FAILED,
        EntryKind.CONCLUSION_UNKNOWN,
        EntryKind.CONCLUSION_RECONCILED,
        EntryKind.DECISION_SUCCEEDED,
        EntryKind.DECISION_FAILED,
        EntryKind.DECISION_UNKNOWN,
        EntryKind.DECISION_RECONCILED,
    }
)
APPROVAL_KINDS = frozenset(
    {
        EntryKind.APPROVAL_REQUESTED,
        EntryKind.APPROVAL_APPROVED,
        EntryKind.APPROVAL_REJECTED,
        EntryKind.APPROVAL_EXPIRED,
    }
)
# Not told: a "requested" entry (its outcome follows), a late answer (it changes
# nothing), a bookmark. A refused press (a second click) is an outcome entry that is
# skipped too: see _refused_press.
NOTIFIED_KINDS = OUTCOME_KINDS | APPROVAL_KINDS

WEBHOOK_URL_MAX_LENGTH = 2000
# The part of the URL after the host shows its last characters in the hint only when
# it is long enough that they give little of it away.
HINT_TAIL = 4
HINT_TAIL_MIN_REST = 16
HINT_HOST_MAX = 60
SUBJECT_NAME_MAX = 120
USER_AGENT = "Experiment Desk notifications"

# Readable answers, as constants so tests and the settings page can match them.
MSG_URL_TOO_LONG = f"That address is too long: a webhook address has at most {WEBHOOK_URL_MAX_LENGTH} characters."
MSG_URL_INVALID = "That is not a web address. Paste the whole webhook address, starting with https://."
MSG_URL_SCHEME = "The webhook address must start with https:// (or http://)."
MSG_URL_HOST = "The webhook address has no host name after https://."
MSG_WEBHOOK_UNREADABLE = (
    "The webhook address can no longer be read: the dashboard's secret key changed since it was saved. "
    "A workspace admin must set the webhook again on the workspace settings page."
)
MSG_WEBHOOK_REMOVED = "The webhook was removed from the workspace settings before this message could be sent."
MSG_TIMED_OUT = "timed out"
MSG_NO_CONNECTION = "could not connect"
MSG_TLS_FAILED = "could not connect securely (TLS)"
MSG_HTTP_STATUS = "HTTP {status} from the webhook"
MSG_HTTP_REDIRECT = "HTTP {status} from the webhook (a redirect; redirects are not followed)"
MSG_REQUEST_FAILED = "the request failed ({kind})"
MSG_MAIL_TIMED_OUT = "timed out talking to the mail server"
MSG_MAIL_NO_CONNECTION = "could not connect to the mail server"
MSG_MAIL_AUTH = "the mail server refused our sign-in (check EMAIL_HOST_USER and EMAIL_HOST_PASSWORD)"
MSG_MAIL_REFUSED = "the mail server refused the address"
MSG_MAIL_ANSWERED = "the mail server answered {code}"
MSG_MAIL_NOTHING = "the mail server accepted nothing"
MSG_MAIL_FAILED = "sending failed ({kind})"


# --- The webhook URL, sealed ----------------------------------------------------------


class WebhookUnreadable(Exception):
    """A sealed webhook URL that neither SECRET_KEY nor any of SECRET_KEY_FALLBACKS opens."""


def _fernet_key(secret: str) -> bytes:
    # A key of its own, derived from SECRET_KEY, so a Fernet token is never a
    # by-product of anything else Django signs with that key.
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"experiment-desk webhook url v1")
    return base64.urlsafe_b64encode(hkdf.derive(secret.encode("utf-8")))


def _sealer() -> MultiFernet:
    keys = [settings.SECRET_KEY, *settings.SECRET_KEY_FALLBACKS]
    return MultiFernet([Fernet(_fernet_key(key)) for key in keys])


@sensitive_variables("url")
def webhook_seal(url: str) -> str:
    """The webhook URL sealed under the current SECRET_KEY (text safe to store)."""
    return _sealer().encrypt(url.encode("utf-8")).decode("ascii")


@sensitive_variables()
def webhook_open(sealed: str) -> str:
    """The webhook URL from its sealed form; WebhookUnreadable when no key opens it."""
    try:
        return _sealer().decrypt(sealed.encode("ascii")).decode("utf-8")
    except (InvalidToken, ValueError):
        raise WebhookUnreadable(MSG_WEBHOOK_UNREADABLE) from None


def webhook_readable(sealed: str) -> bool:
    """Whether a sealed webhook URL still opens (the settings page warns when not)."""
    try:
        webhook_open(sealed)
    except WebhookUnreadable:
        return False
    return True


@sensitive_variables("url")
def webhook_url_problem(url: str) -> str | None:
    """Why `url` cannot be a webhook address (a readable sentence that never quotes it), or None."""
    if len(url) > WEBHOOK_URL_MAX_LENGTH:
        return MSG_URL_TOO_LONG
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in url):
        return MSG_URL_INVALID
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError for a port that is not a number
    except ValueError:
        return MSG_URL_INVALID
    if parts.scheme.lower() not in ("http", "https"):
        return MSG_URL_SCHEME if parts.scheme else MSG_URL_INVALID
    if not parts.hostname:
        return MSG_URL_HOST
    return None


@sensitive_variables("url")
def webhook_hint(url: str) -> str:
    """What may be shown of a webhook URL: scheme, host, and the last characters of a long rest.

    "https://hooks.slack.com/…x9Qz". Never a user name or password given in the URL.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    if len(host) > HINT_HOST_MAX:
        host = host[:HINT_HOST_MAX] + "…"
    if ":" in host:  # an IPv6 address keeps its brackets, so a port after it reads as one
        host = f"[{host}]"
    if parts.port:
        host += f":{parts.port}"
    rest = url.split(parts.netloc, 1)[1] if parts.netloc else ""
    tail = rest[-HINT_TAIL:] if len(rest) >= HINT_TAIL_MIN_REST else ""
    return f"{parts.scheme.lower()}://{host}/…{tail}"


# --- The hook: which entries become messages, to whom ---------------------------------


def entry_recorded(*, entry: AuditEntry, attempt: ConclusionAttempt) -> None:
    """Queue the messages about `entry` (an attempt's audit entry, just appended).

    Called in the entry's transaction. Does nothing, without a query, for an entry
    that is not told or a workspace with neither a webhook nor email on. Otherwise
    writes the deliveries and their tasks in a savepoint; any failure there is logged
    and swallowed, so the entry and the outcome it records commit regardless.
    """
    if entry.kind not in NOTIFIED_KINDS:
        return
    workspace = attempt.workspace  # loaded with the attempt: no query
    if not (workspace.webhook_url_sealed or workspace.email_bookmarkers):
        return
    if _refused_press(entry, attempt):
        return
    try:
        with transaction.atomic():
            deliveries = NotificationDelivery.objects.bulk_create(_deliveries(entry, attempt, workspace))
            for delivery in deliveries:
                tasks.deliver_notification_later(delivery_id=delivery.pk)
    except Exception:
        # Never the outcome's problem: it is recorded whatever happens here.
        logger.exception(
            "Could not queue the notifications about entry #%s (%s) of attempt #%s; the entry is recorded.",
            entry.seq,
            entry.kind,
            attempt.pk,
        )


def _refused_press(entry: AuditEntry, attempt: ConclusionAttempt) -> bool:
    """A press refused because another attempt held the claim: it sent nothing and
    changed nothing, and the attempt that did will be told about."""
    if entry.kind not in OUTCOME_KINDS:
        return False
    if attempt.failure_reason.startswith(conclusion_services.MSG_BLOCKED_PREFIX):
        return True
    return entry.payload_data.get("blocked_by_attempt") is not None


def _deliveries(entry: AuditEntry, attempt: ConclusionAttempt, workspace: Workspace) -> list[NotificationDelivery]:
    message = notification_message(entry=entry, attempt=attempt)
    now = timezone.now()
    common = {"workspace": workspace, "entry": entry, "attempt": attempt, "created_at": now, "updated_at": now}
    deliveries = []
    if workspace.webhook_url_sealed:
        deliveries.append(
            NotificationDelivery(
                **common,
                channel=DeliveryChannel.WEBHOOK,
                recipient=workspace.webhook_url_hint[:254],
                subject=message.subject,
                body=message.webhook_text(),
            )
        )
    if workspace.email_bookmarkers:
        deliveries.extend(
            NotificationDelivery(
                **common, channel=DeliveryChannel.EMAIL, recipient=address, subject=message.subject, body=message.body
            )
            for address in email_recipients(entry=entry, attempt=attempt, workspace=workspace)
        )
    return deliveries


def email_recipients(*, entry: AuditEntry, attempt: ConclusionAttempt, workspace: Workspace) -> list[str]:
    """Who is emailed about `entry`, one address each, sorted.

    An outcome: whoever bookmarked the experiment in this workspace, while still a
    member of it (or a superuser). An approval step: the requester; a new request
    also every other concluder and admin of the workspace (who may approve it).
    Only active accounts with an email address.
    """
    people = get_user_model().objects.filter(is_active=True).exclude(email="")
    if entry.kind in OUTCOME_KINDS:
        bookmarkers = Bookmark.objects.filter(
            workspace=workspace, kind=BookmarkKind.EXPERIMENT, experiment_id=attempt.experiment_id
        ).values("created_by")
        people = people.filter(Q(memberships__workspace=workspace) | Q(is_superuser=True), pk__in=bookmarkers)
    elif entry.kind == EntryKind.APPROVAL_REQUESTED:
        approvers = Q(memberships__workspace=workspace, memberships__role__in=[Role.CONCLUDER, Role.ADMIN])
        people = people.filter(Q(pk=attempt.actor_id) | approvers)
    else:
        people = people.filter(pk=attempt.actor_id)
    addresses = {email.strip().lower(): email.strip() for email in people.values_list("email", flat=True)}
    return sorted(addresses.values(), key=str.lower)


# --- What a message says ----------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    """One message, as plain text: a subject line and a body."""

    subject: str
    body: str

    def webhook_text(self) -> str:
        """The text a Slack-compatible webhook posts: the subject in bold, then the body,
        with Slack's control characters escaped so no name can ping a channel or make a link."""
        return slack_escape(f"*{self.subject}*\n{self.body}")


def slack_escape(text: str) -> str:
    """Escape the three characters Slack reads as markup (&, <, >)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def one_line(text: str) -> str:
    """Text on one line (for a subject: a line break there would be a new mail header)."""
    return " ".join(text.split())


def attempt_link(attempt: ConclusionAttempt) -> str:
    """The attempt page's address: a full URL when DESK_BASE_URL is set, else the path."""
    return settings.DESK_BASE_URL + reverse("experiments:audit-detail", args=[attempt.pk])


def _action_words(attempt: ConclusionAttempt) -> str:
    return "record the decision on" if attempt.action == AttemptAction.DECISION else "force conclude"


def _headline(entry: AuditEntry, attempt: ConclusionAttempt, name: str, where: str) -> str:
    """What happened, in one sentence."""
    kind, who = entry.kind, entry.actor_name or "someone"
    decision = attempt.action == AttemptAction.DECISION
    noun = "The decision on" if decision else "Force concluding"
    if kind in (EntryKind.CONCLUSION_SUCCEEDED, EntryKind.DECISION_SUCCEEDED):
        if decision:
            # Imported here: decisions takes names from conclusions, which may still be loading.
            from experiments.services import decisions as decision_services

            body = attempt.request_body or {}
            what = decision_services.decision_words(success=bool(body.get("success")), variant=body.get("variant"))
            return f"{who} recorded the decision on {name} in {where}: {what}."
        return f"{who} force concluded {name} in {where}: Mixpanel ended its analysis."
    if kind in (EntryKind.CONCLUSION_FAILED, EntryKind.DECISION_FAILED):
        return f"{noun} {name} in {where} failed; nothing was changed in Mixpanel."
    if kind in (EntryKind.CONCLUSION_UNKNOWN, EntryKind.DECISION_UNKNOWN):
        return (
            f"{noun} {name} in {where} was sent, but no trustworthy answer came back. "
            "It will be checked by reading the experiment from Mixpanel; do not retry."
        )
    if kind in (EntryKind.CONCLUSION_RECONCILED, EntryKind.DECISION_RECONCILED):
        applied = attempt.state == AttemptState.RECONCILED_APPLIED
        verdict = "it was applied" if applied else "it was not applied, so it may be tried again"
        return f"{noun} {name} in {where} was checked by reading Mixpanel: {verdict}."
    requester, action = attempt.actor_name or "someone", _action_words(attempt)
    if kind == EntryKind.APPROVAL_REQUESTED:
        return (
            f"{requester} asks for a second person's approval to {action} {name} in {where}. "
            f"Another concluder or admin of {where} can approve or reject it on the attempt page."
        )
    if kind == EntryKind.APPROVAL_APPROVED:
        return f"{who} approved {requester}'s request to {action} {name} in {where}; it is being sent to Mixpanel."
    if kind == EntryKind.APPROVAL_REJECTED:
        if entry.actor_id is not None and entry.actor_id == attempt.actor_id:
            return f"{requester} withdrew their request to {action} {name} in {where}; nothing was sent."
        return f"{who} rejected {requester}'s request to {action} {name} in {where}; nothing was sent."
    return f"{requester}'s request to {action} {name} in {where} expired without approval; nothing was sent."


def _facts(entry: AuditEntry, attempt: ConclusionAttempt) -> list[tuple[str, str]]:
    facts = [("Experiment", f"{attempt.experiment_name or '(no name)'} ({attempt.experiment_id})")]
    facts.append(("Requested by" if entry.kind in APPROVAL_KINDS else "Pressed by", attempt.actor_name))
    if attempt.action == AttemptAction.DECISION:
        facts.append(("Note", attempt.reason_text))
    else:
        known = attempt.reason_category in ReasonCategory.values
        category = ReasonCategory(attempt.reason_category).label if known else ""
        facts.append(("Reason", ": ".join(part for part in (category, attempt.reason_text) if part)))
        if attempt.end_date:
            facts.append(("End of the analysis window", format_utc(attempt.end_date)))
    if entry.kind in OUTCOME_KINDS and attempt.reviewer_name:
        facts.append(("Approved by", attempt.reviewer_name))
    if entry.kind in OUTCOME_KINDS and attempt.failure_reason:
        facts.append(("What happened", attempt.failure_reason))
    if entry.kind in (EntryKind.APPROVAL_APPROVED, EntryKind.APPROVAL_REJECTED) and attempt.review_note:
        facts.append(("Reviewer's note", attempt.review_note))
    if entry.kind == EntryKind.APPROVAL_REQUESTED and attempt.expires_at:
        facts.append(("Approve or reject by", format_utc(attempt.expires_at)))
    facts.append(("When", format_utc(entry.created_at)))
    return [(label, one_line(value)) for label, value in facts if value]


def notification_message(*, entry: AuditEntry, attempt: ConclusionAttempt) -> Message:
    """The message about one audit entry of an attempt: what happened, to which experiment
    in which workspace, by whom, and the link to the attempt page. Plain text; names from
    Mixpanel are kept as they are (the webhook escapes them, email is plain text)."""
    workspace = attempt.workspace
    experiment_name = one_line(attempt.experiment_name)
    name = f"“{experiment_name}”" if experiment_name else f"experiment {attempt.experiment_id}"
    short_name = name if len(name) <= SUBJECT_NAME_MAX else name[: SUBJECT_NAME_MAX - 2] + "…”"
    label = EntryKind(entry.kind).label
    subject = one_line(f"{workspace.name}: {label}, {short_name}")[:300]
    lines = [_headline(entry, attempt, name, one_line(workspace.name)), ""]
    lines += [f"{label}: {value}" for label, value in _facts(entry, attempt)]
    lines += ["", f"See the attempt: {attempt_link(attempt)}"]
    return Message(subject=subject, body="\n".join(lines))


# --- Sending one delivery (the task's work) ---------------------------------------------


def retry_delay(tries: int) -> dt.timedelta:
    """How long to wait after `tries` failed tries (1, 2, ...): the base, doubling."""
    return dt.timedelta(seconds=settings.NOTIFY_BACKOFF_SECONDS * 2 ** (tries - 1))


def delivery_send(*, delivery_id: int) -> str:
    """Send one delivery, then record how it went; returns the new state (or why nothing was done).

    The message goes out with no transaction open; its outcome is written after. A
    failure is tried again after retry_delay, up to NOTIFY_MAX_TRIES tries in all; an
    address that cannot be read or a webhook that was removed gives up at once.
    """
    delivery = NotificationDelivery.objects.select_related("workspace").filter(pk=delivery_id).first()
    if delivery is None:
        return "missing"
    if delivery.state in (DeliveryState.SENT, DeliveryState.GAVE_UP):
        return f"already {delivery.state}"
    with log_context(attempt_id=delivery.attempt_id, workspace=delivery.workspace.pk):
        if delivery.channel == DeliveryChannel.WEBHOOK:
            error, may_retry = _send_webhook(delivery)
        else:
            error, may_retry = _send_email(delivery)
        return _record_try(delivery, error, may_retry=may_retry)


def _record_try(delivery: NotificationDelivery, error: str, *, may_retry: bool) -> str:
    now = timezone.now()
    tries = delivery.tries + 1
    if not error:
        state = DeliveryState.SENT
    elif may_retry and tries < settings.NOTIFY_MAX_TRIES:
        state = DeliveryState.FAILED
    else:
        state = DeliveryState.GAVE_UP
    columns: dict[str, Any] = {"state": state, "tries": tries, "last_error": error[:500], "updated_at": now}
    if state == DeliveryState.SENT:
        columns["sent_at"] = now
    with transaction.atomic():
        NotificationDelivery.objects.filter(pk=delivery.pk).update(**columns)
        if state == DeliveryState.FAILED:
            tasks.deliver_notification_later(delivery_id=delivery.pk, run_after=now + retry_delay(tries))
    where = f"{delivery.get_channel_display()} to {delivery.recipient}"
    if state == DeliveryState.SENT:
        logger.info("Notification #%s sent (%s, try %s).", delivery.pk, where, tries)
    elif state == DeliveryState.FAILED:
        logger.warning(
            "Notification #%s failed (%s, try %s of %s): %s; trying again in %s.",
            delivery.pk,
            where,
            tries,
            settings.NOTIFY_MAX_TRIES,
            error,
            retry_delay(tries),
        )
    else:
        logger.warning("Notification #%s gave up (%s) after %s tries: %s", delivery.pk, where, tries, error)
    return state


def _send_webhook(delivery: NotificationDelivery) -> tuple[str, bool]:
    """("", _) when the webhook took it; else (what went wrong, whether trying again may help)."""
    workspace = delivery.workspace
    if not workspace.webhook_url_sealed:
        return MSG_WEBHOOK_REMOVED, False
    try:
        url = webhook_open(workspace.webhook_url_sealed)
    except WebhookUnreadable:
        return MSG_WEBHOOK_UNREADABLE, False
    # The workspace's current webhook: an admin who fixed a broken address sees the
    # waiting messages go to the new one.
    if delivery.recipient != workspace.webhook_url_hint[:254]:
        delivery.recipient = workspace.webhook_url_hint[:254]
        NotificationDelivery.objects.filter(pk=delivery.pk).update(recipient=delivery.recipient)
    return post_webhook(url, delivery.body), True


# urllib3 logs each request's URL at DEBUG; a webhook's URL is a secret, so its lines
# are dropped while one is posted (only those: Mixpanel's stay, for debugging).
_POSTING_WEBHOOK: contextvars.ContextVar[bool] = contextvars.ContextVar("posting_webhook", default=False)
_URLLIB3_LOGGERS = ("urllib3.connectionpool", "urllib3.poolmanager", "urllib3.util.retry")


class _QuietWhilePostingWebhook(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not _POSTING_WEBHOOK.get()


_QUIET = _QuietWhilePostingWebhook()


@sensitive_variables("url")
def post_webhook(url: str, text: str) -> str:
    """POST {"text": text} to the webhook; "" when it answered 2xx, else what went wrong
    in our words (never the exception's text, which would name the URL)."""
    timeout = settings.NOTIFY_WEBHOOK_TIMEOUT
    for name in _URLLIB3_LOGGERS:
        logging.getLogger(name).addFilter(_QUIET)  # once: a logger keeps one copy of a filter
    quiet = _POSTING_WEBHOOK.set(True)
    try:
        # stream=True: the answer's body is never read, so a large one costs nothing.
        with requests.post(
            url,
            json={"text": text},
            headers={"User-Agent": USER_AGENT},
            timeout=(timeout, timeout),
            allow_redirects=False,
            stream=True,
        ) as response:
            status = response.status_code
    except requests.Timeout:
        return MSG_TIMED_OUT
    except requests.exceptions.SSLError:
        return MSG_TLS_FAILED
    except requests.ConnectionError:
        return MSG_NO_CONNECTION
    except Exception as exc:  # anything else requests or urllib3 raise: named by type only
        return MSG_REQUEST_FAILED.format(kind=type(exc).__name__)
    finally:
        _POSTING_WEBHOOK.reset(quiet)
    if 200 <= status < 300:
        return ""
    if 300 <= status < 400:
        return MSG_HTTP_REDIRECT.format(status=status)
    return MSG_HTTP_STATUS.format(status=status)


def _send_email(delivery: NotificationDelivery) -> tuple[str, bool]:
    """("", _) when the mail server took it; else (what went wrong, True)."""
    try:
        accepted = send_mail(
            delivery.subject, delivery.body, settings.DEFAULT_FROM_EMAIL, [delivery.recipient], using="default"
        )
    except smtplib.SMTPAuthenticationError:
        return MSG_MAIL_AUTH, True
    except smtplib.SMTPRecipientsRefused:
        return MSG_MAIL_REFUSED, True
    except smtplib.SMTPResponseException as exc:
        return MSG_MAIL_ANSWERED.format(code=exc.smtp_code), True
    except TimeoutError:
        return MSG_MAIL_TIMED_OUT, True
    except (smtplib.SMTPException, OSError):
        return MSG_MAIL_NO_CONNECTION, True
    except Exception as exc:
        return MSG_MAIL_FAILED.format(kind=type(exc).__name__), True
    return ("", True) if accepted else (MSG_MAIL_NOTHING, True)
