"""The weekly digest of decisions owed: an e-mail per person, a webhook message per workspace.

The worker's housekeeping calls `digest_send_if_due` on every tick. From OWED_DIGEST_WEEKDAY at
OWED_DIGEST_HOUR (UTC) until the ISO week ends, the first worker to find no DigestPeriod row
for the week reads what is owed (the lists as cached; no transaction open while it may ask
Mixpanel), then in one transaction inserts the week's row, which is the claim (unique per ISO
year and week), appends an `owed_digest` entry per workspace with a webhook and something
owed (told to the webhook by notifications.entry_recorded), and writes one DigestEmail per
person with an address, something owed and the digest not turned off on their notifications
page, each sent by `deliver_digest` with the notifications' retries. A second worker's
insert fails and its transaction rolls back whole: each week's digest goes out once.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.tasks import task
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from experiments import auditlog, dates
from experiments.models import (
    DeliveryState,
    DigestEmail,
    DigestPeriod,
    EntryKind,
    Membership,
    NotificationPreference,
    Workspace,
)
from experiments.notifications import deliveries as notifications
from experiments.notifications import email
from experiments.notifications.messages import SUBJECT_MAX, experiment_link
from experiments.selectors import experiment_list as list_selectors
from experiments.selectors import owed as owed_selectors
from experiments.services.owed import SYSTEM_NAME
from experiments.text import one_line

logger = logging.getLogger(__name__)

# Experiments a message names per workspace at most; the rest are a count and a link.
ITEMS_PER_WORKSPACE = 20


def digest_moment(now: dt.datetime) -> tuple[int, int, dt.datetime]:
    """The ISO year and week of `now`, and when that week's digest is due."""
    year, week, _ = now.astimezone(dt.UTC).isocalendar()
    day = dt.date.fromisocalendar(year, week, settings.OWED_DIGEST_WEEKDAY)
    return year, week, dt.datetime.combine(day, dt.time(settings.OWED_DIGEST_HOUR), tzinfo=dt.UTC)


def digest_send_if_due(*, now: dt.datetime | None = None) -> DigestPeriod | None:
    """Send this week's digest if it is due and nobody sent it yet; returns the week's row when
    this call sent it, else None."""
    now = now or timezone.now()
    year, week, due_at = digest_moment(now)
    if now < due_at or DigestPeriod.objects.filter(year=year, week=week).exists():
        return None
    workspaces = list(Workspace.objects.filter(memberships__isnull=False).distinct().order_by("name", "pk"))
    owed = {
        ws.pk: owed_selectors.owed_in_snapshot(
            workspace=ws, snapshot=list_selectors.experiment_list_cached(workspace=ws), now=now
        )
        for ws in workspaces
    }
    waiting: dict[int, int] = defaultdict(int)
    for attempt in owed_selectors.attempts_on_people(workspaces=workspaces):
        waiting[attempt.workspace_id] += 1
    label = f"{year}-W{week:02d}"
    try:
        with transaction.atomic():
            period = DigestPeriod.objects.create(year=year, week=week, sent_at=now)
            period.workspaces = _workspace_messages(workspaces, owed, waiting, label)
            period.people = _person_emails(period, workspaces, owed, waiting, label)
            period.save(update_fields=["workspaces", "people"])
    except IntegrityError:
        return None  # another worker sent it
    logger.info("Weekly digest %s: %s e-mails, %s webhook messages.", label, period.people, period.workspaces)
    return period


def _items(owed: tuple[owed_selectors.OwedExperiment, ...], workspace: Workspace) -> list[dict[str, str]]:
    return [
        {
            "reason_label": o.reason_label,
            "name": o.name,
            "owner": o.owner,
            "since": dates.format_utc(o.since),
            "link": experiment_link(workspace, o.experiment.id),
        }
        for o in owed[:ITEMS_PER_WORKSPACE]
    ]


def _workspace_messages(workspaces: list[Workspace], owed: dict[int, Any], waiting: dict[int, int], label: str) -> int:
    sent = 0
    for workspace in workspaces:
        found = owed[workspace.pk]
        if not workspace.webhook_url_sealed or not (found or waiting[workspace.pk]):
            continue
        entry = auditlog.append_entry(
            kind=EntryKind.OWED_DIGEST,
            workspace=workspace,
            actor_name=SYSTEM_NAME,
            payload={
                "week": label,
                "total": len(found),
                "items": [{k: v for k, v in item.items() if k != "link"} for item in _items(found, workspace)],
                "more": max(0, len(found) - ITEMS_PER_WORKSPACE),
                "waiting": waiting[workspace.pk],
            },
        )
        notifications.entry_recorded(entry=entry)
        sent += 1
    return sent


def _person_emails(
    period: DigestPeriod, workspaces: list[Workspace], owed: dict[int, Any], waiting: dict[int, int], label: str
) -> int:
    by_pk = {ws.pk: ws for ws in workspaces}
    opted_out = NotificationPreference.objects.filter(weekly_digest=False).values("user")
    people = get_user_model().objects.filter(is_active=True).exclude(email="").exclude(pk__in=opted_out)
    theirs: dict[int, list[int]] = defaultdict(list)
    for user_pk, ws_pk in Membership.objects.filter(user__in=people, workspace__in=workspaces).values_list(
        "user_id", "workspace_id"
    ):
        theirs[user_pk].append(ws_pk)
    written = 0
    for person in people.filter(pk__in=list(theirs)).order_by("pk"):
        sections = [
            {
                "name": one_line(by_pk[pk].name),
                "total": len(owed[pk]),
                "items": _items(owed[pk], by_pk[pk]),
                "more": max(0, len(owed[pk]) - ITEMS_PER_WORKSPACE),
                "waiting": waiting[pk],
                "list_link": settings.DESK_BASE_URL + reverse("experiments:experiment-list", args=[pk]),
            }
            for pk in sorted(theirs[person.pk], key=lambda pk: (by_pk[pk].name.casefold(), pk))
            if owed[pk] or waiting[pk]
        ]
        if not sections:
            continue
        total = sum(section["total"] + section["waiting"] for section in sections)
        context = {
            "week": label,
            "sections": sections,
            "total": total,
            "home_link": settings.DESK_BASE_URL + reverse("home"),
            "choices_link": settings.DESK_BASE_URL + reverse("experiments:account-notifications"),
        }
        digest = DigestEmail.objects.create(
            period=period,
            user=person,
            recipient=person.email.strip()[:254],
            subject=one_line(render_to_string("notifications/digest_email_subject.txt", context))[:SUBJECT_MAX],
            body=render_to_string("notifications/digest_email_body.txt", context).strip("\n"),
        )
        deliver_digest.enqueue(digest.pk)
        written += 1
    return written


@task()
def deliver_digest(digest_id: int) -> str:
    """Send one person's weekly digest and record how it went ("sent", "failed", "gave_up", ...)."""
    return digest_email_send(digest_id=digest_id)


def digest_email_send(*, digest_id: int) -> str:
    """Send one digest e-mail with no transaction open, then record the outcome; a failure is
    tried again after the notifications' doubling wait, up to NOTIFY_MAX_TRIES tries."""
    digest = DigestEmail.objects.filter(pk=digest_id).first()
    if digest is None:
        return "missing"
    if digest.state in (DeliveryState.SENT, DeliveryState.GAVE_UP):
        return f"already {digest.state}"
    error, may_retry = email.send(subject=digest.subject, body=digest.body, to=digest.recipient)
    tries = digest.tries + 1
    now = timezone.now()
    if not error:
        state = DeliveryState.SENT
    elif may_retry and tries < settings.NOTIFY_MAX_TRIES:
        state = DeliveryState.FAILED
    else:
        state = DeliveryState.GAVE_UP
    with transaction.atomic():
        DigestEmail.objects.filter(pk=digest.pk).update(
            state=state, tries=tries, last_error=error[:500], sent_at=now if not error else None
        )
        if state == DeliveryState.FAILED:
            deliver_digest.using(run_after=now + notifications.retry_delay(tries)).enqueue(digest.pk)
    if error:
        logger.warning("Weekly digest #%s to %s: %s (try %s, %s).", digest.pk, digest.recipient, error, tries, state)
    return state


def digest_preference_set(*, user: Any, weekly_digest: bool) -> bool:
    """Turn the weekly digest e-mail on or off for `user`; returns whether anything changed."""
    preference, _created = NotificationPreference.objects.get_or_create(user=user)
    if preference.weekly_digest == weekly_digest:
        return False
    preference.weekly_digest = weekly_digest
    preference.updated_at = timezone.now()
    preference.save(update_fields=["weekly_digest", "updated_at"])
    return True
