"""Reads for audit review: keyset pages of attempts, the export's rows, and one attempt's timeline."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.db.models import Exists, Func, OuterRef, Q, QuerySet, Subquery, TextField
from django.db.models.functions import Cast

from experiments import audit_payloads
from experiments.dates import parse_iso_datetime
from experiments.models import AttemptState, AuditEntry, ConclusionAttempt, EntryKind, Membership, Workspace

# The audit list pages a million ConclusionAttempt rows by keyset on `id` (unique and
# increasing with time): every page is "WHERE <filters> AND id < cursor ORDER BY id DESC
# LIMIT n+1", which an index answers in the same time at any depth. No OFFSET, and no
# COUNT(*) of the table (an approximate total comes from PostgreSQL's statistics).

AUDIT_PAGE_SIZE = 50
AUDIT_PAGE_SIZES = (10, 25, 50, 100, 200)
AUDIT_EXPORT_CHUNK = 2000
REVIEW_ALL_PERMISSION = "experiments.review_all_conclusions"
# How far created_at may run out of step with id. Both are set when the attempt is
# inserted, so they disagree by at most a transaction's length; a day is a wide margin
# that costs a day of rows at most when a date range is turned into id bounds.
_DATE_ID_SLACK = dt.timedelta(days=1)
_CURSOR_PATTERN = re.compile(r"^([ab])([0-9]{1,18})$")
_APPLIED_STATUSES = ("concluded", "success", "fail")


@dataclass(frozen=True, slots=True)
class AuditFilters:
    """The audit list's filters (all optional); the same object drives the list and export."""

    workspace_id: int | None = None
    # An actor's user id ("42") or username.
    person: str = ""
    # "conclusion" or "decision" (AttemptAction).
    action: str = ""
    outcome: str = ""
    # Inclusive UTC calendar dates.
    date_from: dt.date | None = None
    date_to: dt.date | None = None
    # Free text over experiment name, experiment id and reason text.
    q: str = ""

    @property
    def is_empty(self) -> bool:
        return self == AuditFilters()

    def params(self) -> list[tuple[str, str]]:
        """The filter as URL parameters, in a fixed order, empty ones left out."""
        pairs = [
            ("workspace", str(self.workspace_id) if self.workspace_id else ""),
            ("person", self.person),
            ("action", self.action),
            ("outcome", self.outcome),
            ("date_from", self.date_from.isoformat() if self.date_from else ""),
            ("date_to", self.date_to.isoformat() if self.date_to else ""),
            ("q", self.q),
        ]
        return [(key, value) for key, value in pairs if value]


@dataclass(frozen=True, slots=True)
class AuditPage:
    """One page of attempts, newest first, with the cursors of its neighbours."""

    rows: list[ConclusionAttempt]
    newer_cursor: str | None
    older_cursor: str | None
    page_size: int
    # Only when it is cheap (PostgreSQL statistics, unfiltered view of everything).
    approximate_total: int | None = None
    is_first_page: bool = True


def audit_can_review_all(*, user: Any) -> bool:
    """Whether `user` may read every workspace's audit (the permission, or superuser)."""
    return bool(user.is_active and user.has_perm(REVIEW_ALL_PERMISSION))


def audit_workspaces_for_user(*, user: Any) -> list[Workspace]:
    """The workspaces whose audit `user` may read, by name (one query)."""
    if audit_can_review_all(user=user):
        return list(Workspace.objects.order_by("name", "id"))
    return list(Workspace.objects.filter(memberships__user=user).order_by("name", "id"))


def _visible_attempts(user: Any) -> QuerySet[ConclusionAttempt]:
    if audit_can_review_all(user=user):
        return ConclusionAttempt.objects.all()
    # A correlated EXISTS on the membership, not a Python list of workspace ids. It keeps
    # the scan in id order: with "workspace_id IN (subquery)" SQLite reads every attempt
    # of the member's workspaces by the workspace index and sorts them all for each page
    # (O(rows) at any depth); here it walks ids newest first and stops after a page.
    # PostgreSQL plans both forms as the same semi-join.
    membership = Membership.objects.filter(user=user, workspace_id=OuterRef("workspace_id"))
    return ConclusionAttempt.objects.filter(Exists(membership))


def audit_attempt_for_user(*, user: Any, pk: int) -> ConclusionAttempt | None:
    """One attempt, when `user` may read its audit (a member of its workspace, or a reviewer of all)."""
    return _visible_attempts(user).select_related("workspace").filter(pk=pk).first()


def audit_entries_after(*, user: Any, after: int, limit: int) -> list[AuditEntry]:
    """Up to `limit` entries of the hash chain after seq `after`, in order, as `user` may read
    them: every entry for a reviewer of all workspaces; else the entries of the workspaces they
    belong to (which leaves gaps: only the whole chain can be verified). Keyset on seq."""
    entries = AuditEntry.objects.filter(seq__gt=after).order_by("seq")
    if not audit_can_review_all(user=user):
        entries = entries.filter(Exists(Membership.objects.filter(user=user, workspace_id=OuterRef("workspace_id"))))
    return list(entries[:limit])


def _day_start(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time.min, tzinfo=dt.UTC)


def _apply_audit_filters(qs: QuerySet[ConclusionAttempt], filters: AuditFilters) -> QuerySet[ConclusionAttempt]:
    if filters.workspace_id:
        qs = qs.filter(workspace_id=filters.workspace_id)  # attempt_ws_id_idx
    if filters.person:
        # ASCII digits only: "²" is a digit to str.isdigit(), but int() refuses it.
        if filters.person.isascii() and filters.person.isdigit():
            qs = qs.filter(actor_id=int(filters.person))  # attempt_actor_id_idx
        else:
            # A scalar subquery (one username, one id): PostgreSQL evaluates it once and
            # scans attempt_actor_id_idx with the result, as for an id.
            user_id = get_user_model().objects.filter(username=filters.person).values("pk")[:1]
            qs = qs.filter(actor_id=Subquery(user_id))
    if filters.action:
        qs = qs.filter(action=filters.action)  # attempt_action_id_idx
    if filters.outcome:
        qs = qs.filter(state=filters.outcome)  # attempt_state_id_idx
    if filters.date_from or filters.date_to:
        qs = _apply_date_range(qs, filters.date_from, filters.date_to)
    if filters.q:
        # No index serves a substring search: the scan walks ids newest first and stops
        # after a page of matches, so a common word is fast and a rare one may read the
        # whole visible table (about 0.3-1 s at a million rows). Narrow by workspace,
        # person, outcome or dates first to bound it.
        qs = qs.filter(
            Q(experiment_name__icontains=filters.q)
            | Q(experiment_id__icontains=filters.q)
            | Q(reason_text__icontains=filters.q)
        )
    return qs


def _apply_date_range(
    qs: QuerySet[ConclusionAttempt], date_from: dt.date | None, date_to: dt.date | None
) -> QuerySet[ConclusionAttempt]:
    """created_at bounds (exact) plus id bounds (fast), so the scan stays in id order.

    Filtering on created_at alone lets a planner walk the primary key from the newest
    row and discard everything after the range, or read the whole range and sort it.
    Two one-row probes of attempt_created_idx turn the range into id bounds (with a
    margin, since created_at and id can disagree by a transaction's length), so the
    page is read by id from the right place; the created_at bounds keep it exact.
    """
    order = ConclusionAttempt.objects.order_by
    if date_from:
        start = _day_start(date_from)
        qs = qs.filter(created_at__gte=start)
        lowest = order("created_at", "id").filter(created_at__gte=start - _DATE_ID_SLACK).values("id")[:1]
        qs = qs.filter(id__gte=Subquery(lowest))
    if date_to:
        end = _day_start(date_to) + dt.timedelta(days=1)
        qs = qs.filter(created_at__lt=end)
        highest = order("-created_at", "-id").filter(created_at__lt=end + _DATE_ID_SLACK).values("id")[:1]
        qs = qs.filter(id__lte=Subquery(highest))
    return qs


def audit_attempts_filtered(*, user: Any, filters: AuditFilters) -> QuerySet[ConclusionAttempt]:
    """Every attempt `user` may see that matches `filters`, unordered (list and export share it)."""
    return _apply_audit_filters(_visible_attempts(user), filters)


def parse_audit_cursor(token: str | None) -> tuple[str, int] | None:
    """("older"|"newer", id) from a cursor token "b<id>" / "a<id>"; None when unusable."""
    match = _CURSOR_PATTERN.match(token or "")
    if not match:
        return None
    return ("older" if match.group(1) == "b" else "newer", int(match.group(2)))


def _approximate_attempt_total() -> int | None:
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        # The planner's row estimate, refreshed by (auto)vacuum/analyze: free to read.
        cursor.execute(
            "SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass", [ConclusionAttempt._meta.db_table]
        )
        row = cursor.fetchone()
    return int(row[0]) if row and row[0] is not None and row[0] >= 0 else None


def audit_attempt_page(
    *,
    user: Any,
    filters: AuditFilters,
    cursor: str | int | None = None,
    direction: str = "older",
    page_size: int = AUDIT_PAGE_SIZE,
) -> AuditPage:
    """One page of the attempts `user` may see, newest first, paged by keyset on id.

    `cursor` is a token from a previous page ("b<id>": older than id, "a<id>": newer
    than id) or a bare id read in `direction`; anything unusable gives the first page.
    Rows inserted between page loads never make a page skip or repeat a row. One
    query per page (plus a statistics read for the approximate total on PostgreSQL).
    """
    page_size = max(1, min(int(page_size), max(AUDIT_PAGE_SIZES)))
    if isinstance(cursor, int) and not isinstance(cursor, bool):
        position = ("newer" if direction == "newer" else "older", cursor) if cursor > 0 else None
    else:
        position = parse_audit_cursor(cursor)
    qs = audit_attempts_filtered(user=user, filters=filters).select_related("workspace")

    if position and position[0] == "newer":
        after = position[1]
        rows = list(qs.filter(id__gt=after).order_by("id")[: page_size + 1])
        more_newer = len(rows) > page_size
        rows = rows[:page_size]
        rows.reverse()
        newer = f"a{rows[0].pk}" if more_newer else None
        # We came from older rows: offer the way back even if this page is empty.
        older = f"b{rows[-1].pk}" if rows else f"b{after + 1}"
        return AuditPage(rows, newer, older, page_size, is_first_page=False)

    before = position[1] if position else None
    page_qs = qs.filter(id__lt=before) if before is not None else qs
    rows = list(page_qs.order_by("-id")[: page_size + 1])
    more_older = len(rows) > page_size
    rows = rows[:page_size]
    older = f"b{rows[-1].pk}" if more_older else None
    if before is None:
        total = _approximate_attempt_total() if filters.is_empty and audit_can_review_all(user=user) else None
        return AuditPage(rows, None, older, page_size, approximate_total=total)
    newer = f"a{rows[0].pk}" if rows else f"a{before - 1}"
    return AuditPage(rows, newer, older, page_size, is_first_page=False)


AUDIT_EXPORT_FIELDS = (
    "id",
    "action",
    "created_at",
    "workspace_id",
    "workspace__name",
    "actor_id",
    "actor_name",
    "experiment_id",
    "experiment_name",
    "reason_category",
    "reason_text",
    "end_date",
    "request_body",
    "state",
    "failure_reason",
    "http_status",
    "duration_ms",
    "finished_at",
    "expires_at",
    "reviewer_id",
    "reviewer_name",
    "review_note",
    "reviewed_at",
    "seq",
    "hash",
)


class _UTCTimestampText(Func):
    """A datetime column as ISO 8601 UTC text ("2026-03-01T12:00:00.123456Z"), made by the database.

    Formatting a million datetimes in Python (parse, astimezone, isoformat) was a third
    of the export's time; the database does it for free while it reads the row.
    """

    output_field = TextField()

    def as_postgresql(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, list[Any]]:
        template = "to_char(%(expressions)s AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
        return self.as_sql(compiler, connection, template=template, **extra)

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, list[Any]]:
        # Django keeps SQLite datetimes as naive UTC text "YYYY-MM-DD HH:MM:SS[.ffffff]".
        return self.as_sql(compiler, connection, template="(replace(%(expressions)s, ' ', 'T') || 'Z')", **extra)


_EXPORT_AS_TEXT = {
    "created_at": lambda: _UTCTimestampText("created_at"),
    "end_date": lambda: _UTCTimestampText("end_date"),
    "finished_at": lambda: _UTCTimestampText("finished_at"),
    "expires_at": lambda: _UTCTimestampText("expires_at"),
    "reviewed_at": lambda: _UTCTimestampText("reviewed_at"),
    # The JSON text as stored: no decode and re-encode per row.
    "request_body": lambda: Cast("request_body", output_field=TextField()),
    # The attempt's latest audit entry (the one that set its outcome, or its intent while
    # it has none): where the row sits in the hash chain, to check it against verify_audit.
    # One probe each of entry_attempt_seq_idx per row.
    "seq": lambda: Subquery(_latest_entry().values("seq")[:1]),
    "hash": lambda: Subquery(_latest_entry().values("hash")[:1]),
}


def _latest_entry() -> QuerySet[AuditEntry]:
    return AuditEntry.objects.filter(attempt_id=OuterRef("pk")).order_by("-seq")


def audit_export_rows(*, user: Any, filters: AuditFilters) -> Iterator[tuple[Any, ...]]:
    """Every attempt `user` may see under `filters`, newest first, streamed as tuples.

    Each tuple holds AUDIT_EXPORT_FIELDS in order; the datetimes come as ISO 8601 UTC
    text and request_body as its JSON text, both made by the database. Rows are
    values_list() tuples, not model instances, read in chunks. On PostgreSQL the read
    runs inside a transaction so Django uses a server-side cursor: outside one,
    psycopg builds the whole result before the first row (~19 s at a million rows).
    """
    columns = [_EXPORT_AS_TEXT[name]() if name in _EXPORT_AS_TEXT else name for name in AUDIT_EXPORT_FIELDS]
    qs = audit_attempts_filtered(user=user, filters=filters).order_by("-id").values_list(*columns)
    # Only PostgreSQL needs (and benefits from) the transaction; on SQLite our
    # transactions are IMMEDIATE and would hold the write lock for the whole export.
    with transaction.atomic() if connection.vendor == "postgresql" else contextlib.nullcontext():
        yield from qs.iterator(chunk_size=AUDIT_EXPORT_CHUNK)


# Attempt detail --------------------------------------------------------------------------

_OUTCOME_KINDS = (
    EntryKind.CONCLUSION_SUCCEEDED,
    EntryKind.CONCLUSION_FAILED,
    EntryKind.CONCLUSION_UNKNOWN,
    EntryKind.DECISION_SUCCEEDED,
    EntryKind.DECISION_FAILED,
    EntryKind.DECISION_UNKNOWN,
)
_RECONCILED_KINDS = (EntryKind.CONCLUSION_RECONCILED, EntryKind.DECISION_RECONCILED)


@dataclass(frozen=True, slots=True)
class AuditTimelineEntry:
    """One audit entry of an attempt, with its payload decoded (never evaluated)."""

    entry: AuditEntry
    payload: dict[str, Any]

    @property
    def short_hash(self) -> str:
        return self.entry.hash[:12]

    @property
    def note(self) -> str:
        """The entry's own readable sentence, when it has one."""
        moved = audit_payloads.projection_of(self.payload)
        reason = self.payload.get("reason") or moved.get("failure_reason") or moved.get("review_note")
        return reason if isinstance(reason, str) else ""


@dataclass(frozen=True, slots=True)
class ReturnedSummary:
    """Mixpanel's returned experiment in a few readable fields (each may be missing)."""

    status_before: str | None
    status_after: str | None
    start_date: dt.datetime | None
    end_date: dt.datetime | None
    variant_count: int | None
    exposures: int | None


@dataclass(frozen=True, slots=True)
class AuditAttemptDetail:
    """Everything the attempt page shows, decoded from the attempt's entries.

    JSON values are kept as data and pretty-printed as text; the template
    escapes all of it (it is upstream text).
    """

    attempt: ConclusionAttempt
    timeline: list[AuditTimelineEntry]
    request_body: Any = None
    before: Any = None
    # A snapshot or answer kept as text: cut at the size cap, or not JSON at all.
    before_raw: str | None = None
    returned: Any = None
    returned_raw: str | None = None
    truncated: bool = False
    error: str = ""
    error_details: dict[str, Any] = field(default_factory=dict)
    summary: ReturnedSummary | None = None
    reconciliation: dict[str, Any] = field(default_factory=dict)

    @property
    def request_body_json(self) -> str:
        return _pretty_json(self.request_body)

    @property
    def reconciled_status(self) -> str:
        """The status the reconciliation read from Mixpanel."""
        return str(self.reconciliation.get("upstream_status") or "")

    @property
    def before_json(self) -> str:
        return _pretty_json(self.before)

    @property
    def returned_json(self) -> str:
        return _pretty_json(self.returned)


def _pretty_json(value: Any) -> str:
    if value is None:
        return ""
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def _decode_payload(entry: AuditEntry) -> dict[str, Any]:
    try:
        data = json.loads(entry.payload or "{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _snapshot_parts(value: Any) -> tuple[Any, str | None]:
    """(JSON, None), or (None, text) for a snapshot stored cut as {"truncated": true, "text": ...}."""
    if isinstance(value, dict) and value.get("truncated") is True and isinstance(value.get("text"), str):
        return None, value["text"]
    return value, None


def _body_parts(body: Any) -> tuple[Any, str | None]:
    """An answer's body text as JSON when it is JSON, else as text."""
    if not isinstance(body, str) or not body:
        return None, None
    try:
        return json.loads(body), None
    except ValueError:
        return None, body


def _when(value: Any) -> dt.datetime | None:
    try:
        return parse_iso_datetime(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _summary(before: Any, after: Any) -> ReturnedSummary | None:
    """The returned experiment's key fields, from the summaries the service wrote."""
    if not isinstance(after, dict):
        return None
    return ReturnedSummary(
        status_before=before.get("status") if isinstance(before, dict) else None,
        status_after=after.get("status"),
        start_date=_when(after.get("start_date")),
        end_date=_when(after.get("end_date")),
        variant_count=after.get("variants"),
        exposures=after.get("exposures"),
    )


def audit_attempt_detail(*, user: Any, pk: int) -> AuditAttemptDetail | None:
    """One attempt with its timeline, or None when `user` may not see it.

    Two queries: the attempt (with its workspace) and its entries in seq order.
    Payloads have the shapes experiments.audit_payloads defines.
    """
    attempt = _visible_attempts(user).select_related("workspace").filter(pk=pk).first()
    if attempt is None:
        return None
    entries = AuditEntry.objects.filter(attempt_id=attempt.pk).order_by("seq")  # entry_attempt_seq_idx
    timeline = [AuditTimelineEntry(entry, _decode_payload(entry)) for entry in entries]
    outcome: dict[str, Any] = {}
    reconciliation: dict[str, Any] = {}
    for item in timeline:
        if item.entry.kind in _OUTCOME_KINDS:
            outcome = item.payload
        elif item.entry.kind in _RECONCILED_KINDS:
            reconciliation = item.payload
    before, before_raw = _snapshot_parts(outcome.get("before"))
    response = outcome.get("response") or {}
    returned, returned_raw = _body_parts(response.get("body"))
    return AuditAttemptDetail(
        attempt=attempt,
        timeline=timeline,
        request_body=attempt.request_body,
        before=before,
        before_raw=before_raw,
        returned=returned,
        returned_raw=returned_raw,
        truncated=bool(response.get("truncated")),
        error="" if attempt.state == AttemptState.SUCCEEDED else attempt.failure_reason,
        error_details=outcome.get("error") or {},
        summary=_summary(outcome.get("before_summary"), response.get("summary")),
        reconciliation=reconciliation,
    )
