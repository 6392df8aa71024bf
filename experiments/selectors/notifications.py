"""Reads for the workspace settings page: the workspace's latest notification deliveries."""

from __future__ import annotations

from typing import Any

from django.core.paginator import Page, Paginator
from django.db.models import F

from experiments.models import EntryKind, NotificationDelivery, Workspace

DELIVERIES_PER_PAGE = 25


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
