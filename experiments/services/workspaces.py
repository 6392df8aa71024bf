"""Writes for workspaces (the provisioning commands) and a workspace's settings (its admins'
settings page). Members and group rules are experiments.services.roles."""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction
from django.views.decorators.debug import sensitive_variables

from experiments import auditlog
from experiments.models import DeliveryChannel, EntryKind, Workspace
from experiments.notifications import deliveries as notifications
from experiments.notifications import webhook

logger = logging.getLogger(__name__)


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
    remind_due: bool | None = None,
    remind_overdue: bool | None = None,
    remind_undecided: bool | None = None,
    remind_no_data: bool | None = None,
) -> list[str]:
    """Save a workspace's notification and approval settings; returns what changed, in words.
    A change is kept in the audit hash chain too (settings_changed, by whom, what).

    `webhook_url` is validated already (forms.WorkspaceSettingsForm); "" keeps the current
    webhook unless `remove_webhook`; a reminder switch left None keeps its value. The URL is
    stored sealed with its hint, and never logged: the log line names who changed what, with
    the hint for a new webhook.
    """
    changes: list[str] = []
    # What makes the workspace's safeguards weaker: told to its admins, whoever does it.
    loosened: list[str] = []
    columns: dict[str, Any] = {}
    if remove_webhook and workspace.webhook_url_sealed:
        columns.update(webhook_url_sealed="", webhook_url_hint="")
        changes.append("webhook removed")
        loosened.append(f"the webhook {workspace.webhook_url_hint} was removed: the channel hears nothing more")
    elif webhook_url:
        hint = webhook.webhook_hint(webhook_url)
        columns.update(webhook_url_sealed=webhook.webhook_seal(webhook_url), webhook_url_hint=hint)
        changes.append(f"webhook set to {hint}")
    if email_bookmarkers != workspace.email_bookmarkers:
        columns["email_bookmarkers"] = email_bookmarkers
        changes.append("email " + ("on" if email_bookmarkers else "off"))
    if requires_approval != workspace.requires_approval:
        columns["requires_approval"] = requires_approval
        changes.append("two-person approval " + ("required" if requires_approval else "no longer required"))
        if not requires_approval:
            loosened.append("two-person approval was turned off: one person can now force conclude alone")
    if approval_window_hours != workspace.approval_window_hours:
        columns["approval_window_hours"] = approval_window_hours
        changes.append(f"approval window {workspace.approval_window_hours} h → {approval_window_hours} h")
        if approval_window_hours < workspace.approval_window_hours:
            loosened.append(
                f"the approval window was shortened from {workspace.approval_window_hours} h to "
                f"{approval_window_hours} h: requests expire sooner"
            )
    reminders = {
        "remind_due": remind_due,
        "remind_overdue": remind_overdue,
        "remind_undecided": remind_undecided,
        "remind_no_data": remind_no_data,
    }
    for name, wanted in reminders.items():
        if wanted is not None and wanted != getattr(workspace, name):
            columns[name] = wanted
            label = Workspace._meta.get_field(name).verbose_name
            changes.append(f"reminder “{label}” " + ("on" if wanted else "off"))
    if not columns:
        return []
    with transaction.atomic():
        # Only the columns that changed: an admin saving another setting at the same time keeps theirs.
        Workspace.objects.filter(pk=workspace.pk).update(**columns)
        for name, value in columns.items():
            setattr(workspace, name, value)
        # In the hash chain, like every conclusion: turning approval off is something an
        # auditor must be able to see. The webhook appears by its hint only.
        entry = auditlog.append_entry(
            kind=EntryKind.SETTINGS_CHANGED,
            workspace=workspace,
            actor=user,
            actor_name=auditlog.display_name(user),
            payload={
                "changes": changes,
                "loosened": loosened,
                "settings": {
                    "webhook": workspace.webhook_url_hint if workspace.webhook_url_sealed else "",
                    "email_bookmarkers": workspace.email_bookmarkers,
                    "requires_approval": workspace.requires_approval,
                    "approval_window_hours": workspace.approval_window_hours,
                    "reminders": {name: getattr(workspace, name) for name in reminders},
                },
            },
        )
        notifications.entry_recorded(entry=entry)

    logger.info(
        "Workspace settings of %s (#%s) changed by %s: %s.",
        workspace.name,
        workspace.pk,
        auditlog.display_name(user),
        "; ".join(changes),
    )
    return changes


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
