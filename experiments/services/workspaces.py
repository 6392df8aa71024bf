"""Writes for workspaces (the provisioning commands) and a workspace's settings (its admins'
settings page, the admin site), with the task that turns two-person approval off once its
delay is over. Members and group rules are experiments.services.roles."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from django.conf import settings
from django.db import transaction
from django.tasks import task
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables

from experiments import audit_payloads, auditlog
from experiments.dates import format_utc
from experiments.models import (
    APPROVAL_WINDOW_MAX_HOURS,
    APPROVAL_WINDOW_MIN_HOURS,
    ApprovalWhen,
    DeliveryChannel,
    EntryKind,
    Workspace,
)
from experiments.notifications import deliveries as notifications
from experiments.notifications import webhook, webhook_address

logger = logging.getLogger(__name__)

# Who turns approval off when its delay is over (no person does, at that moment).
SWITCH_OFF_NAME = "scheduled switch-off"
RESULT_OFF = "off"
RESULT_CANCELLED = "cancelled"
RESULT_NOT_DUE = "not due"
MSG_APPROVAL_WHEN = "Two-person approval applies always or when risky; nothing else."
MSG_WINDOW_BOUNDS = (
    f"The approval window is {APPROVAL_WINDOW_MIN_HOURS} to {APPROVAL_WINDOW_MAX_HOURS} hours: a request must be "
    "able to wait for its approver, and must not wait for ever."
)


def workspace_ensure(
    *, name: str, region: str, mixpanel_workspace_id: int, mixpanel_project_id: int | None = None
) -> tuple[Workspace, str]:
    """Create the workspace, or bring its name and project id up to date.

    Returns the workspace and "created", "updated" or "unchanged".
    """
    with transaction.atomic():
        workspace, created = Workspace.objects.select_for_update().get_or_create(
            region=region,
            mixpanel_workspace_id=mixpanel_workspace_id,
            defaults={"name": name, "mixpanel_project_id": mixpanel_project_id},
        )
        if created:
            return workspace, "created"
        if (workspace.name, workspace.mixpanel_project_id) == (name, mixpanel_project_id):
            return workspace, "unchanged"
        workspace.name = name
        workspace.mixpanel_project_id = mixpanel_project_id
        workspace.save(update_fields=["name", "mixpanel_project_id"])
        return workspace, "updated"


def workspace_webhooks_reseal() -> list[tuple[Workspace, str]]:
    """Seal every workspace's webhook under the current SECRET_KEY (after a key rotation, so the
    old key can leave SECRET_KEY_FALLBACKS). Returns each workspace with a webhook and what
    became of it: webhook.RESEALED, webhook.CURRENT or webhook.UNREADABLE."""
    found = Workspace.objects.exclude(webhook_url_sealed="").order_by("name", "id")
    return [(workspace, webhook.webhook_reseal_saved(workspace=workspace)) for workspace in found]


@sensitive_variables("webhook_url")
def workspace_settings_update(
    *,
    workspace: Workspace,
    user: Any,
    webhook_url: str,
    remove_webhook: bool,
    email_bookmarkers: bool,
    requires_approval: bool,
    approval_window_hours: int,
    approval_when: str | None = None,
    actor_name: str = "",
    remind_due: bool | None = None,
    remind_overdue: bool | None = None,
    remind_undecided: bool | None = None,
    remind_no_data: bool | None = None,
) -> list[str]:
    """Save a workspace's notification and approval settings; returns what changed, in words.
    Every change is kept in the audit hash chain too (settings_changed: by whom, what, and the
    settings after it, which verify_audit compares the workspace with).

    The one way these settings change: the settings page, the admin site and the commands all
    come here. `requires_approval` is what the admin wants: turning approval off only plans it
    for APPROVAL_OFF_DELAY_HOURS later (approval_switch_off makes it so), and asking for it on
    again meanwhile cancels the plan. `approval_when` (always or when risky; None keeps it)
    says which presses approval applies to while it is on: together they are the workspace's
    approval policy (Workspace.approval_policy). `webhook_url` is validated already
    (forms.WorkspaceSettingsForm); "" keeps the current webhook unless `remove_webhook`; a
    reminder switch left None keeps its value. The URL is stored sealed with its hint, and never
    logged. `user` may be None for a command, which names itself in `actor_name`. A window
    outside 1 to 168 hours is a ValueError (the forms refuse it first, and the database refuses
    it last).
    """
    if not APPROVAL_WINDOW_MIN_HOURS <= approval_window_hours <= APPROVAL_WINDOW_MAX_HOURS:
        raise ValueError(MSG_WINDOW_BOUNDS)
    if approval_when is not None and approval_when not in ApprovalWhen.values:
        raise ValueError(MSG_APPROVAL_WHEN)
    actor_name = actor_name or auditlog.display_name(user)
    with transaction.atomic():
        # Locked and read afresh: two admins saving at once are chained one after the other,
        # each entry with the settings as they then were.
        current = Workspace.objects.select_for_update().get(pk=workspace.pk)
        columns, changes, loosened = _changed_columns(
            current,
            webhook_url=webhook_url,
            remove_webhook=remove_webhook,
            email_bookmarkers=email_bookmarkers,
            requires_approval=requires_approval,
            approval_window_hours=approval_window_hours,
            approval_when=approval_when,
            reminders={
                "remind_due": remind_due,
                "remind_overdue": remind_overdue,
                "remind_undecided": remind_undecided,
                "remind_no_data": remind_no_data,
            },
        )
        if not columns:
            return []
        Workspace.objects.filter(pk=workspace.pk).update(**columns)
        for name, value in columns.items():
            setattr(current, name, value)
            setattr(workspace, name, value)
        _append_settings_changed(current, changes=changes, loosened=loosened, actor=user, actor_name=actor_name)
        if columns.get("approval_off_at") and current.requires_approval:
            approval_switch_off.using(run_after=current.approval_off_at).enqueue(
                current.pk, current.approval_off_at.isoformat(), actor_name
            )

    logger.info(
        "Workspace settings of %s (#%s) changed by %s: %s.",
        workspace.name,
        workspace.pk,
        actor_name,
        "; ".join(changes),
    )
    return changes


def _append_settings_changed(
    workspace: Workspace, *, changes: list[str], loosened: list[str], actor: Any, actor_name: str
) -> None:
    # In the hash chain, like every conclusion: turning approval off is something an
    # auditor must be able to see. The webhook appears by its hint only.
    entry = auditlog.append_entry(
        kind=EntryKind.SETTINGS_CHANGED,
        workspace=workspace,
        actor=actor,
        actor_name=actor_name,
        payload={
            "changes": changes,
            "loosened": loosened,
            audit_payloads.SETTINGS: audit_payloads.workspace_settings(workspace),
        },
    )
    notifications.entry_recorded(entry=entry)


@sensitive_variables("webhook_url")
def _changed_columns(
    workspace: Workspace,
    *,
    webhook_url: str,
    remove_webhook: bool,
    email_bookmarkers: bool,
    requires_approval: bool,
    approval_window_hours: int,
    approval_when: str | None,
    reminders: dict[str, bool | None],
) -> tuple[dict[str, Any], list[str], list[str]]:
    """The columns to write, what changed in words, and what of it weakens the safeguards
    (told to the workspace's admins, whoever does it)."""
    columns: dict[str, Any] = {}
    changes: list[str] = []
    loosened: list[str] = []
    if remove_webhook and workspace.webhook_url_sealed:
        columns.update(webhook_url_sealed="", webhook_url_hint="")
        changes.append("webhook removed")
        loosened.append(f"the webhook {workspace.webhook_url_hint} was removed: the channel hears nothing more")
    elif webhook_url:
        hint = webhook_address.webhook_hint(webhook_url)
        columns.update(webhook_url_sealed=webhook.webhook_seal(webhook_url), webhook_url_hint=hint)
        changes.append(f"webhook set to {hint}")
    if email_bookmarkers != workspace.email_bookmarkers:
        columns["email_bookmarkers"] = email_bookmarkers
        changes.append("email " + ("on" if email_bookmarkers else "off"))
    _approval_change(workspace, requires_approval, columns, changes, loosened)
    if approval_when is not None and approval_when != workspace.approval_when:
        columns["approval_when"] = approval_when
        now_label, was_label = (ApprovalWhen(value).label.lower() for value in (approval_when, workspace.approval_when))
        changes.append(f"two-person approval applies {now_label} (was {was_label})")
        if approval_when == ApprovalWhen.RISKY:
            loosened.append(
                "two-person approval now applies only when a conclusion or decision is risky: "
                "one person can force conclude or record a decision alone when no risk rule applies"
            )
    if approval_window_hours != workspace.approval_window_hours:
        columns["approval_window_hours"] = approval_window_hours
        changes.append(f"approval window {workspace.approval_window_hours} h → {approval_window_hours} h")
        if approval_window_hours < workspace.approval_window_hours:
            loosened.append(
                f"the approval window was shortened from {workspace.approval_window_hours} h to "
                f"{approval_window_hours} h: requests expire sooner"
            )
    for name, wanted in reminders.items():
        if wanted is not None and wanted != getattr(workspace, name):
            columns[name] = wanted
            label = Workspace._meta.get_field(name).verbose_name
            changes.append(f"reminder “{label}” " + ("on" if wanted else "off"))
    return columns, changes, loosened


MSG_TEST_NOWHERE = "Nothing was sent: no webhook is set and email is off. Set one of them first, then try again."
MSG_TEST_SENT = "A test message is on its way {where}. It is listed under Latest messages below: reload to see it sent."
MSG_TEST_NO_ADDRESS = (
    "Nothing was sent: email is on but your account has no email address, and no webhook is set. "
    "The test is kept in the audit trail."
)


def notification_test_send(*, workspace: Workspace, user: Any) -> str:
    """Send a test message through the same path as every notification, and say where it went.

    It is an audit entry (notification_test, by `user`) told to the workspace's channels like
    any other entry: the webhook, and by email to `user` when email is on. Its deliveries are
    sent by the worker and listed on the settings page like every message. With neither channel
    on nothing is recorded.
    """
    if not (workspace.webhook_url_sealed or workspace.email_bookmarkers):
        return MSG_TEST_NOWHERE
    with transaction.atomic():
        entry = auditlog.append_entry(
            kind=EntryKind.NOTIFICATION_TEST,
            workspace=workspace,
            actor=user,
            actor_name=auditlog.display_name(user),
            payload={
                "webhook": workspace.webhook_url_hint if workspace.webhook_url_sealed else "",
                "email": workspace.email_bookmarkers,
            },
        )
        deliveries = notifications.entry_recorded(entry=entry)
    logger.info("Test message of %s (#%s) sent by %s.", workspace.name, workspace.pk, auditlog.display_name(user))
    if not deliveries:
        return MSG_TEST_NO_ADDRESS
    places = [
        f"to the webhook {delivery.recipient}"
        if delivery.channel == DeliveryChannel.WEBHOOK
        else f"by email to {delivery.recipient}"
        for delivery in deliveries
    ]
    return MSG_TEST_SENT.format(where=" and ".join(places))


def _approval_change(
    workspace: Workspace, wanted: bool, columns: dict[str, Any], changes: list[str], loosened: list[str]
) -> None:
    """Two-person approval: on at once; off only after the delay, planned now and told at once,
    so one admin cannot switch it off, conclude alone and switch it back before anyone knows."""
    pending = workspace.requires_approval and workspace.approval_off_at is not None
    if wanted and not workspace.requires_approval:
        columns.update(requires_approval=True, approval_off_at=None)
        changes.append("two-person approval required")
    elif wanted and pending:
        columns["approval_off_at"] = None
        changes.append(
            f"two-person approval stays on: its switch-off at {format_utc(workspace.approval_off_at)} was cancelled"
        )
    elif not wanted and workspace.requires_approval and not pending:
        off_at = timezone.now() + dt.timedelta(hours=settings.APPROVAL_OFF_DELAY_HOURS)
        columns["approval_off_at"] = off_at
        when = format_utc(off_at)
        changes.append(f"two-person approval turns off at {when}, unless an admin keeps it on")
        loosened.append(
            f"two-person approval will be turned off at {when}: from then on one person can force conclude alone. "
            "Until then it still applies, and any admin can keep it on from the settings page"
        )


# --- Approval's switch-off, when its delay is over ---------------------------------------------


def workspace_approval_switch_off(*, workspace_pk: int, off_at: dt.datetime, asked_by: str) -> str:
    """Turn two-person approval off as planned for `off_at`, once that moment has come: chained
    (as the scheduled switch-off an admin asked for) and told. Returns what it did: "off",
    "not due", or "cancelled" when an admin kept approval on (or planned another moment)."""
    with transaction.atomic():
        workspace = Workspace.objects.select_for_update().filter(pk=workspace_pk).first()
        if workspace is None or not workspace.requires_approval or workspace.approval_off_at != off_at:
            return RESULT_CANCELLED
        if off_at > timezone.now():
            return RESULT_NOT_DUE
        Workspace.objects.filter(pk=workspace.pk).update(requires_approval=False)
        workspace.requires_approval = False
        _append_settings_changed(
            workspace,
            changes=[f"two-person approval turned off, as {asked_by} asked"],
            loosened=["two-person approval is now off: one person can force conclude alone"],
            actor=None,
            actor_name=SWITCH_OFF_NAME,
        )
    logger.info("Two-person approval of %s (#%s) is now off, as %s asked.", workspace.name, workspace.pk, asked_by)
    return RESULT_OFF


@task()
def approval_switch_off(workspace_id: int, off_at: str, asked_by: str) -> str:
    """Turn a workspace's two-person approval off at the end of its delay, unless an admin kept
    it on. A clock behind the database's runs it a little early: it looks again when due."""
    when = dt.datetime.fromisoformat(off_at)
    result = workspace_approval_switch_off(workspace_pk=workspace_id, off_at=when, asked_by=asked_by)
    if result == RESULT_NOT_DUE:
        approval_switch_off.using(run_after=when).enqueue(workspace_id, off_at, asked_by)
    return result
