"""Writes for workspaces (the provisioning commands) and a workspace's settings (its admins'
settings page). Members and group rules are experiments.services.roles."""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction
from django.views.decorators.debug import sensitive_variables

from experiments import audit_payloads, auditlog
from experiments.models import APPROVAL_WINDOW_MAX_HOURS, APPROVAL_WINDOW_MIN_HOURS, EntryKind, Workspace
from experiments.notifications import deliveries as notifications
from experiments.notifications import webhook, webhook_address

logger = logging.getLogger(__name__)

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
    actor_name: str = "",
) -> list[str]:
    """Save a workspace's notification and approval settings; returns what changed, in words.
    Every change is kept in the audit hash chain too (settings_changed: by whom, what, and the
    settings after it, which verify_audit compares the workspace with).

    The one way these settings change: the settings page, the admin site and the commands all
    come here. `webhook_url` is validated already (forms.WorkspaceSettingsForm); "" keeps the
    current webhook unless `remove_webhook`. The URL is stored sealed with its hint, and never
    logged: the log line names who changed what, with the hint for a new webhook. `user` may be
    None for a command, which names itself in `actor_name`. A window outside 1 to 168 hours is
    a ValueError (the forms refuse it first, and the database refuses it last).
    """
    if not APPROVAL_WINDOW_MIN_HOURS <= approval_window_hours <= APPROVAL_WINDOW_MAX_HOURS:
        raise ValueError(MSG_WINDOW_BOUNDS)
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
        )
        if not columns:
            return []
        Workspace.objects.filter(pk=workspace.pk).update(**columns)
        for name, value in columns.items():
            setattr(current, name, value)
            setattr(workspace, name, value)
        # In the hash chain, like every conclusion: turning approval off is something an
        # auditor must be able to see. The webhook appears by its hint only.
        entry = auditlog.append_entry(
            kind=EntryKind.SETTINGS_CHANGED,
            workspace=current,
            actor=user,
            actor_name=actor_name,
            payload={
                "changes": changes,
                "loosened": loosened,
                audit_payloads.SETTINGS: audit_payloads.workspace_settings(current),
            },
        )
        notifications.entry_recorded(entry=entry)

    logger.info(
        "Workspace settings of %s (#%s) changed by %s: %s.",
        workspace.name,
        workspace.pk,
        actor_name,
        "; ".join(changes),
    )
    return changes


@sensitive_variables("webhook_url")
def _changed_columns(
    workspace: Workspace,
    *,
    webhook_url: str,
    remove_webhook: bool,
    email_bookmarkers: bool,
    requires_approval: bool,
    approval_window_hours: int,
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
    return columns, changes, loosened
