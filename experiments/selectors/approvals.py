"""Reads for two-person approval: the requests waiting for a person's approval, the person's own
requests and how they ended, and who may approve a request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.utils import timezone

from experiments.auditlog import display_name
from experiments.models import CONCLUDING_ROLES, AttemptState, ConclusionAttempt, Membership
from experiments.selectors.workspaces import WorkspaceAccess

INBOX_LIMIT = 50
OWN_REQUESTS_LIMIT = 10
APPROVERS_NAMED = 4


def approval_inbox(*, user: Any, workspaces: list[WorkspaceAccess]) -> list[ConclusionAttempt]:
    """The requests `user` may approve: waiting, still within their window, someone else's,
    in the workspaces where `user` concludes; the soonest to expire first. One query
    (attempt_ws_state_id_idx), none when `user` concludes nowhere."""
    concluding = [access.workspace.pk for access in workspaces if access.can_conclude]
    if not concluding:
        return []
    requests = (
        ConclusionAttempt.objects.filter(
            workspace_id__in=concluding, state=AttemptState.AWAITING_APPROVAL, expires_at__gt=timezone.now()
        )
        .exclude(actor_id=user.pk)
        .select_related("workspace")
        .order_by("expires_at", "id")
    )
    return list(requests[:INBOX_LIMIT])


@dataclass(frozen=True, slots=True)
class OwnRequest:
    """One of a person's requests for approval, with who may approve it while it waits
    ("Quinn (quinn) or Ada (ada)"; "" once it no longer waits, or when nobody may)."""

    attempt: ConclusionAttempt
    approvers: str = ""


def own_requests(*, user: Any, workspaces: list[WorkspaceAccess], limit: int = OWN_REQUESTS_LIMIT) -> list[OwnRequest]:
    """`user`'s latest requests for approval in their workspaces, newest first: the waiting
    ones (with who may approve them) and how the others ended (with the reviewer and their
    note). One query (attempt_actor_id_idx), and one more for the approvers while any waits."""
    requests = list(
        ConclusionAttempt.objects.filter(
            actor_id=user.pk,
            expires_at__isnull=False,
            workspace_id__in=[access.workspace.pk for access in workspaces],
        )
        .select_related("workspace")
        .order_by("-id")[:limit]
    )
    waiting = {attempt.workspace_id for attempt in requests if attempt.is_awaiting_approval}
    approvers = approvers_by_workspace(workspace_ids=waiting, requester_id=user.pk)
    return [
        OwnRequest(
            attempt, approvers_text(approvers.get(attempt.workspace_id, ())) if attempt.is_awaiting_approval else ""
        )
        for attempt in requests
    ]


def approvers_by_workspace(*, workspace_ids: set[int], requester_id: int | None) -> dict[int, tuple[str, ...]]:
    """Who may approve a request in each workspace, by name: its active concluders and admins
    other than the requester (a superuser may approve too, but is no member to name). One query."""
    if not workspace_ids:
        return {}
    members = (
        Membership.objects.filter(workspace_id__in=workspace_ids, role__in=CONCLUDING_ROLES, user__is_active=True)
        .exclude(user_id=requester_id)
        .select_related("user")
        .order_by("user__first_name", "user__username")
    )
    names: dict[int, list[str]] = {}
    for membership in members:
        names.setdefault(membership.workspace_id, []).append(display_name(membership.user))
    return {pk: tuple(found) for pk, found in names.items()}


def approvers_text(names: tuple[str, ...]) -> str:
    """ "Quinn (quinn) or Ada (ada)", "A, B, C, D or 3 others", or "" when there is nobody."""
    if len(names) <= APPROVERS_NAMED:
        shown = list(names)
        return " or ".join([", ".join(shown[:-1]), shown[-1]]) if len(shown) > 1 else "".join(shown)
    rest = len(names) - APPROVERS_NAMED
    return f"{', '.join(names[:APPROVERS_NAMED])} or {rest} other{'s' if rest > 1 else ''}"
