"""What a message says: rendered from templates/notifications/, once, when its deliveries are written.

Plain text. Names from Mixpanel are kept as they are here; each channel makes them safe
for where they go (the webhook escapes chat markup, e-mail is plain text).
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.template.loader import render_to_string
from django.urls import NoReverseMatch, reverse

from experiments.models import (
    APPROVAL_KINDS,
    OUTCOME_KINDS,
    AuditEntry,
    ConclusionAttempt,
    EntryKind,
    ReasonCategory,
    Workspace,
)
from experiments.text import one_line

SUBJECT_NAME_MAX = 120
SUBJECT_MAX = 300


@dataclass(frozen=True)
class Message:
    """One message, as plain text: a subject line and a body."""

    subject: str
    body: str


def attempt_link(attempt: ConclusionAttempt) -> str:
    """The attempt page's address: a full URL when DESK_BASE_URL is set, else the path."""
    return settings.DESK_BASE_URL + reverse("experiments:audit-detail", args=[attempt.pk])


def workspace_settings_link(workspace: Workspace) -> str:
    """The workspace's settings page, where its admins see who changed what."""
    return settings.DESK_BASE_URL + reverse("experiments:workspace-settings", args=[workspace.pk])


def experiment_link(workspace: Workspace, experiment_id: str) -> str:
    """The experiment page's address, or the workspace's list when no route can carry the id."""
    try:
        path = reverse("experiments:experiment-detail", args=[workspace.pk, experiment_id])
    except NoReverseMatch:
        path = reverse("experiments:experiment-list", args=[workspace.pk])
    return settings.DESK_BASE_URL + path


def _reason(attempt: ConclusionAttempt) -> str:
    known = attempt.reason_category in ReasonCategory.values
    category = ReasonCategory(attempt.reason_category).label if known else ""
    return ": ".join(part for part in (category, attempt.reason_text) if part)


def notification_message(*, entry: AuditEntry, attempt: ConclusionAttempt | None) -> Message:
    """The message about one audit entry: of an attempt (what happened, to which experiment
    in which workspace, by whom, and the link to the attempt page), or about a workspace."""
    if attempt is None:
        return _workspace_message(entry)
    workspace = attempt.workspace
    experiment_name = one_line(attempt.experiment_name)
    name = f"“{experiment_name}”" if experiment_name else f"experiment {attempt.experiment_id}"
    short_name = name if len(name) <= SUBJECT_NAME_MAX else name[: SUBJECT_NAME_MAX - 2] + "…”"
    label = EntryKind(entry.kind).label
    subject = render_to_string(
        "notifications/attempt_subject.txt",
        {"workspace_name": workspace.name, "label": label, "short_name": short_name},
    )
    body = render_to_string(
        "notifications/attempt_body.txt",
        {
            "entry": entry,
            "attempt": attempt,
            "name": name,
            "where": one_line(workspace.name),
            "reason": _reason(attempt),
            "approval_step": entry.kind in APPROVAL_KINDS,
            "outcome": entry.kind in OUTCOME_KINDS,
            "reviewed": entry.kind in (EntryKind.APPROVAL_APPROVED, EntryKind.APPROVAL_REJECTED),
            "link": attempt_link(attempt),
        },
    )
    return Message(subject=one_line(subject)[:SUBJECT_MAX], body=body.strip("\n"))


def _workspace_message(entry: AuditEntry) -> Message:
    """A message about the workspace itself, from templates/notifications/<kind>_*.txt."""
    workspace = entry.workspace
    context = {
        "entry": entry,
        "payload": entry.payload_data,
        "where": one_line(workspace.name),
        "who": entry.actor_name or "someone",
        "link": workspace_settings_link(workspace),
        "experiment_link": experiment_link(workspace, entry.experiment_id) if entry.experiment_id else "",
        "list_link": settings.DESK_BASE_URL + reverse("experiments:experiment-list", args=[workspace.pk]),
        "home_link": settings.DESK_BASE_URL + reverse("home"),
    }
    subject = render_to_string(f"notifications/{entry.kind}_subject.txt", context)
    body = render_to_string(f"notifications/{entry.kind}_body.txt", context)
    return Message(subject=one_line(subject)[:SUBJECT_MAX], body=body.strip("\n"))
