"""Reads for the workspace settings page: the workspace's latest notification deliveries,
and the latest changes to its settings (from the audit trail)."""

from __future__ import annotations

from typing import Any

from django.core.paginator import Page, Paginator
from django.db.models import Count, F, Q

from experiments.models import AuditEntry, EntryKind, Membership, NotificationDelivery, Workspace

DELIVERIES_PER_PAGE = 25
SETTINGS_CHANGES_SHOWN = 10


def settings_change_list(*, workspace: Workspace, limit: int = SETTINGS_CHANGES_SHOWN) -> list[dict[str, Any]]:
    """The workspace's latest settings changes, newest first (index entry_ws_kind_seq_idx):
    when, who, and what changed in words."""
    entries = AuditEntry.objects.filter(workspace=workspace, kind=EntryKind.SETTINGS_CHANGED).order_by("-seq")
    changes = []
    for entry in entries[:limit]:
        described = entry.payload_data.get("changes")
        changes.append(
            {
                "created_at": entry.created_at,
                "actor_name": entry.actor_name,
                "changes": [str(item) for item in described] if isinstance(described, list) else [],
                "seq": entry.seq,
            }
        )
    return changes


def email_reach(*, workspace: Workspace) -> tuple[int, int]:
    """(with an address, in all): the workspace's active members who could be emailed, and how
    many there are. One query."""
    members = Membership.objects.filter(workspace=workspace, user__is_active=True)
    reach = members.aggregate(total=Count("pk"), with_address=Count("pk", filter=~Q(user__email="")))
    return reach["with_address"], reach["total"]


def delivery_page(*, workspace: Workspace, page: Any) -> Page:
    """One page of the workspace's deliveries, newest first (index delivery_ws_id_idx).

    Each row carries `event` (the entry's kind) and `event_label`, and `experiment_name`
    and `experiment_id` from its attempt, without loading the entry's payload or the
    message body. Any `page` is answered: not a number gives the first page, past the
    end the last.
    """
    rows = (
        NotificationDelivery.objects.filter(workspace=workspace)
        .annotate(
            event=F("entry__kind"),
            experiment_name=F("attempt__experiment_name"),
            experiment_id=F("attempt__experiment_id"),
        )
        .defer("body")
        .order_by("-id")
    )
    found = Paginator(rows, DELIVERIES_PER_PAGE).get_page(page)
    found.object_list = list(found.object_list)
    labels = dict(EntryKind.choices)
    for row in found.object_list:
        row.event_label = labels.get(row.event, row.event)
    return found
