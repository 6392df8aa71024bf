"""The e-mail channel: plain-text messages through Django's mail, to the people concerned."""

from __future__ import annotations

import smtplib

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import send_mail
from django.db.models import Q

from experiments.models import (
    CONCLUDING_ROLES,
    OUTCOME_KINDS,
    AuditEntry,
    Bookmark,
    BookmarkKind,
    ConclusionAttempt,
    EntryKind,
    Role,
    Workspace,
)

MSG_MAIL_TIMED_OUT = "timed out talking to the mail server"
MSG_MAIL_NO_CONNECTION = "could not connect to the mail server"
MSG_MAIL_AUTH = "the mail server refused our sign-in (check EMAIL_HOST_USER and EMAIL_HOST_PASSWORD)"
MSG_MAIL_REFUSED = "the mail server refused the address"
MSG_MAIL_ANSWERED = "the mail server answered {code}"
MSG_MAIL_NOTHING = "the mail server accepted nothing"
MSG_MAIL_FAILED = "sending failed ({kind})"


def email_recipients(*, entry: AuditEntry, attempt: ConclusionAttempt | None, workspace: Workspace) -> list[str]:
    """Who is e-mailed about `entry`, one address each, sorted.

    An outcome: whoever bookmarked the experiment in this workspace, while still a member
    of it (or a superuser). An approval step: the requester; a new request, and its
    withdrawal, also every other concluder and admin of the workspace (who may approve it). An entry about the
    workspace itself (a settings change): every admin of the workspace. Only active
    accounts with an e-mail address. A test message: the admin who sent it. A decision owed:
    the experiment's owner when their address belongs to a member of the workspace, and whoever
    bookmarked it while a member.
    """
    people = get_user_model().objects.filter(is_active=True).exclude(email="")
    if entry.kind == EntryKind.NOTIFICATION_TEST:
        people = people.filter(pk=entry.actor_id)
    elif entry.kind == EntryKind.EXPERIMENT_OWED:
        bookmarkers = Bookmark.objects.filter(
            workspace=workspace, kind=BookmarkKind.EXPERIMENT, experiment_id=entry.experiment_id
        ).values("created_by")
        owner = (entry.payload_data.get("owner_email") or "").strip()
        concerned = Q(pk__in=bookmarkers) | (Q(email__iexact=owner) if owner else Q(pk__in=[]))
        people = people.filter(concerned, memberships__workspace=workspace)
    elif attempt is None:
        people = people.filter(memberships__workspace=workspace, memberships__role=Role.ADMIN)
    elif entry.kind in OUTCOME_KINDS:
        bookmarkers = Bookmark.objects.filter(
            workspace=workspace, kind=BookmarkKind.EXPERIMENT, experiment_id=attempt.experiment_id
        ).values("created_by")
        people = people.filter(Q(memberships__workspace=workspace) | Q(is_superuser=True), pk__in=bookmarkers)
    elif entry.kind in (EntryKind.APPROVAL_REQUESTED, EntryKind.APPROVAL_WITHDRAWN):
        approvers = Q(memberships__workspace=workspace, memberships__role__in=CONCLUDING_ROLES)
        people = people.filter(Q(pk=attempt.actor_id) | approvers)
    else:
        people = people.filter(pk=attempt.actor_id)
    addresses = {email.strip().lower(): email.strip() for email in people.values_list("email", flat=True)}
    return sorted(addresses.values(), key=str.lower)


def send(*, subject: str, body: str, to: str) -> tuple[str, bool]:
    """Send one plain-text message: ("", _) when the mail server took it; else (what went wrong, True)."""
    try:
        accepted = send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, [to], using="default")
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
