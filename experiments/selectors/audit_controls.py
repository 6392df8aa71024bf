"""Reads for the audit list's view of the controls: the entries that are not attempts.

Settings changes (and the other GOVERNANCE_KINDS) say who changed a workspace's safeguards:
approval turned off, a shorter window, the webhook. They live only in the hash chain, so this
view pages AuditEntry itself, by keyset on `seq` over the partial index
entry_governance_seq_idx, with the audit list's filters (workspace, person, dates, text).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.db.models import Exists, OuterRef, Q, QuerySet, Subquery

from experiments.models import GOVERNANCE_KINDS, PLAN_KINDS, SCHEDULE_KINDS, AuditEntry, EntryKind, Membership
from experiments.selectors.audit import (
    AUDIT_EXPORT_CHUNK,
    AUDIT_PAGE_SIZES,
    AuditFilters,
    AuditPage,
    audit_can_review_all,
    parse_audit_cursor,
)

# The audit list's "action" filter value that shows the controls instead of attempts.
CONTROLS = "controls"
CONTROLS_LABEL = "Settings, roles and tokens"
# The other view of entries that are not attempts: experiments' sealed plans and their schedules.
PLANS = "plans"
PLANS_LABEL = "Plans and schedules"
# The entry kinds each of these views pages.
VIEW_KINDS = {CONTROLS: GOVERNANCE_KINDS, PLANS: PLAN_KINDS | SCHEDULE_KINDS}
CONTROL_EXPORT_FIELDS = (
    "seq",
    "kind",
    "created_at",
    "workspace_id",
    "workspace__name",
    "actor_id",
    "actor_name",
    "changes",
    "payload",
    "hash",
)


@dataclass(frozen=True, slots=True)
class ControlEntry:
    """One governance entry as the audit list shows it: the entry, and what changed in words."""

    entry: AuditEntry
    changes: tuple[str, ...]
    loosened: tuple[str, ...]

    @property
    def pk(self) -> int:
        return self.entry.seq


def _words(payload: dict[str, Any], key: str) -> tuple[str, ...]:
    found = payload.get(key)
    return tuple(str(item) for item in found) if isinstance(found, list) else ()


def _role_words(payload: dict[str, Any]) -> tuple[str, ...]:
    member = payload.get("member") if isinstance(payload.get("member"), dict) else {}
    whose = member.get("name") or (f"members of group {payload['group_rule']}" if payload.get("group_rule") else "")
    where = payload.get("workspace_name") or "every workspace"
    before, after = payload.get("role_before") or "none", payload.get("role_after") or "none"
    source = f" ({payload['source']})" if payload.get("source") else ""
    return (f"{whose or 'someone'}: {before} → {after} in {where}{source}",)


def _token_words(kind: str, payload: dict[str, Any]) -> tuple[str, ...]:
    owner = payload.get("owner") if isinstance(payload.get("owner"), dict) else {}
    name, scope = payload.get("name", ""), payload.get("scope", "")
    made = kind == EntryKind.TOKEN_CREATED
    what = f"API token “{name}” ({scope}) of {owner.get('name', 'someone')}"
    return (f"{what} made, until {payload.get('expires_at', '')}" if made else f"{what} revoked",)


def _plan_words(kind: str, payload: dict[str, Any], name: str) -> tuple[str, ...]:
    sealed = payload.get("sealed") if isinstance(payload.get("sealed"), dict) else {}
    if kind == EntryKind.PLAN_SEALED:
        first_seen = " as first seen" if sealed.get("as_first_seen") else ""
        return (f"plan of {name} sealed{first_seen}; Mixpanel's modified {sealed.get('modified') or 'unknown'}",)
    changes = payload.get("changes") if isinstance(payload.get("changes"), list) else []
    fields = ", ".join(str(c.get("field", "")) for c in changes if isinstance(c, dict))
    return (f"plan of {name} changed: {fields or 'no field named'}",)


def _schedule_words(kind: str, payload: dict[str, Any], name: str) -> tuple[str, ...]:
    schedule = payload.get("schedule") if isinstance(payload.get("schedule"), dict) else {}
    when = schedule.get("run_at", "")
    if kind == EntryKind.SCHEDULE_SET:
        return (f"force conclude of {name} scheduled for {when} by {schedule.get('author_name', '')}",)
    if kind == EntryKind.SCHEDULE_CANCELLED:
        return (f"schedule of {name} for {when} cancelled: {schedule.get('cancel_reason', '')}",)
    if kind == EntryKind.SCHEDULE_REFUSED:
        return (f"schedule of {name} for {when} ran, and its press was refused: {schedule.get('refusal', '')}",)
    return (f"schedule of {name} for {when} ran at {schedule.get('fired_at', '')}",)


def describe(kind: str, payload: Any, experiment_name: str = "") -> tuple[str, ...]:
    """An entry's change in words, whatever its kind (a governance entry, a plan's or a schedule's)."""
    if not isinstance(payload, dict):
        return ()
    name = f"“{experiment_name}”" if experiment_name else "an experiment"
    if kind in PLAN_KINDS:
        return _plan_words(kind, payload, name)
    if kind in SCHEDULE_KINDS:
        return _schedule_words(kind, payload, name)
    if kind == EntryKind.ROLE_CHANGED:
        return _role_words(payload)
    if kind in (EntryKind.TOKEN_CREATED, EntryKind.TOKEN_REVOKED):
        return _token_words(kind, payload)
    return _words(payload, "changes")


def _kinds(filters: AuditFilters) -> frozenset[str]:
    return VIEW_KINDS.get(filters.action, GOVERNANCE_KINDS)


def _visible_entries(user: Any, kinds: frozenset[str]) -> QuerySet[AuditEntry]:
    entries = AuditEntry.objects.filter(kind__in=sorted(kinds))
    if audit_can_review_all(user=user):
        return entries
    membership = Membership.objects.filter(user=user, workspace_id=OuterRef("workspace_id"))
    return entries.filter(Exists(membership))


def _filtered(user: Any, filters: AuditFilters) -> QuerySet[AuditEntry]:
    entries = _visible_entries(user, _kinds(filters))
    if filters.workspace_id:
        entries = entries.filter(workspace_id=filters.workspace_id)
    if filters.person:
        if filters.person.isascii() and filters.person.isdigit():
            entries = entries.filter(actor_id=int(filters.person))
        else:
            user_id = get_user_model().objects.filter(username=filters.person).values("pk")[:1]
            entries = entries.filter(actor_id=Subquery(user_id))
    if filters.date_from:
        entries = entries.filter(created_at__gte=dt.datetime.combine(filters.date_from, dt.time.min, tzinfo=dt.UTC))
    if filters.date_to:
        end = dt.datetime.combine(filters.date_to, dt.time.min, tzinfo=dt.UTC) + dt.timedelta(days=1)
        entries = entries.filter(created_at__lt=end)
    if filters.q:
        # These entries are few: a substring search of their text is cheap.
        entries = entries.filter(
            Q(payload__icontains=filters.q)
            | Q(actor_name__icontains=filters.q)
            | Q(experiment_name__icontains=filters.q)
        )
    return entries


def audit_control_page(*, user: Any, filters: AuditFilters, cursor: str | None = None, page_size: int) -> AuditPage:
    """One page of the governance entries `user` may see under `filters`, newest first, by
    keyset on seq ("b<seq>": older than seq, "a<seq>": newer). The outcome filter does not
    apply (they have none). One query per kind of entry per page."""
    page_size = max(1, min(int(page_size), max(AUDIT_PAGE_SIZES)))
    position = parse_audit_cursor(cursor)
    entries = _filtered(user, filters).select_related("workspace")
    kinds = _kinds(filters)
    if position and position[0] == "newer":
        after = position[1]
        rows = _each_kind(entries.filter(seq__gt=after), "seq", page_size + 1, kinds)
        more_newer = len(rows) > page_size
        rows = rows[:page_size]
        rows.reverse()
        shown = [_control(entry) for entry in rows]
        newer = f"a{rows[0].seq}" if more_newer else None
        older = f"b{rows[-1].seq}" if rows else f"b{after + 1}"
        return AuditPage(shown, newer, older, page_size, is_first_page=False)
    before = position[1] if position else None
    page_entries = entries.filter(seq__lt=before) if before is not None else entries
    rows = _each_kind(page_entries, "-seq", page_size + 1, kinds)
    more_older = len(rows) > page_size
    rows = rows[:page_size]
    shown = [_control(entry) for entry in rows]
    older = f"b{rows[-1].seq}" if more_older else None
    if before is None:
        return AuditPage(shown, None, older, page_size)
    newer = f"a{rows[0].seq}" if rows else f"a{before - 1}"
    return AuditPage(shown, newer, older, page_size, is_first_page=False)


def _each_kind(entries: QuerySet[AuditEntry], order: str, limit: int, kinds: frozenset[str]) -> list[AuditEntry]:
    """The first `limit` entries in `order` (by seq), read kind by kind through
    entry_kind_seq_idx and merged: each read is a short range, however long the chain."""
    found = [entry for kind in sorted(kinds) for entry in entries.filter(kind=kind).order_by(order)[:limit]]
    found.sort(key=lambda entry: entry.seq, reverse=order.startswith("-"))
    return found[:limit]


def _control(entry: AuditEntry) -> ControlEntry:
    payload = entry.payload_data
    return ControlEntry(entry, describe(entry.kind, payload, entry.experiment_name), _words(payload, "loosened"))


def audit_control_export_rows(*, user: Any, filters: AuditFilters) -> Iterator[tuple[Any, ...]]:
    """Every governance entry `user` may see under `filters`, newest first, as tuples of
    CONTROL_EXPORT_FIELDS: the changes in words ("; " between them), the payload as the JSON
    text that was hashed, and seq and hash to check the row against verify_audit."""
    entries = (
        _filtered(user, filters)
        .order_by("-seq")
        .values_list(
            "seq",
            "kind",
            "created_at",
            "workspace_id",
            "workspace__name",
            "actor_id",
            "actor_name",
            "payload",
            "hash",
            "experiment_name",
        )
    )
    with transaction.atomic() if connection.vendor == "postgresql" else contextlib.nullcontext():
        for seq, kind, created_at, ws_id, ws_name, actor_id, actor_name, payload, entry_hash, name in entries.iterator(
            chunk_size=AUDIT_EXPORT_CHUNK
        ):
            try:
                data = json.loads(payload or "{}")
            except ValueError:
                data = {}
            changes = "; ".join(describe(kind, data, name))
            when = created_at.astimezone(dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
            yield (seq, kind, when, ws_id, ws_name, actor_id, actor_name, changes, payload, entry_hash)
