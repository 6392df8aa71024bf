"""The audit trail's hash chain: canonical serialisation, hashing and appending.

Every entry's hash covers a canonical JSON form of its content plus the previous
entry's hash, so editing, deleting, inserting or reordering any entry breaks the
chain at a point `verify_audit` can name. Appends are serialised (an advisory
lock on PostgreSQL; SQLite's IMMEDIATE transactions already admit one writer),
and a unique constraint on `prev_hash` refuses a fork even if that ever failed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from django.db import DatabaseError, connection, transaction
from django.db.models import QuerySet
from django.db.models.sql import UpdateQuery
from django.utils import timezone

from experiments.models import AuditEntry, ConclusionAttempt, EntryKind, Workspace

GENESIS_HASH = "0" * 64
# Any constant: the key of the PostgreSQL advisory lock that serialises appends.
_APPEND_LOCK_KEY = 0x6A75_6469_7421


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return format_timestamp(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def canonical_json(value: Any) -> str:
    """One text for one value: sorted keys, no insignificant space, UTF-8 kept."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_json_default)


def format_timestamp(value: dt.datetime) -> str:
    """UTC with microseconds and a Z: the form hashed, and the form end dates are sent in."""
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def entry_hash(
    *,
    seq: int,
    kind: str,
    created_at: dt.datetime,
    workspace_id: int | None,
    actor_id: int | None,
    actor_name: str,
    attempt_id: int | None,
    experiment_id: str,
    experiment_name: str,
    payload: str,
    prev_hash: str,
) -> str:
    """The SHA-256 of an entry's canonical serialisation (the chain's link)."""
    content = canonical_json(
        {
            "seq": seq,
            "kind": kind,
            "created_at": format_timestamp(created_at),
            "workspace_id": workspace_id,
            "actor_id": actor_id,
            "actor_name": actor_name,
            "attempt_id": attempt_id,
            "experiment_id": experiment_id,
            "experiment_name": experiment_name,
            "payload": payload,
            "prev_hash": prev_hash,
        }
    )
    return hashlib.sha256(content.encode("utf-8")).hexdigest()


def hash_of(entry: Any, *, seq: int | None = None) -> str:
    """Recompute an entry's hash from its stored fields (used by verify_audit).

    `entry` is an AuditEntry or a row with the same attributes; `seq` asks what the
    hash would be at another position (how verify_audit recognises renumbering).
    """
    return entry_hash(
        seq=entry.seq if seq is None else seq,
        kind=entry.kind,
        created_at=entry.created_at,
        workspace_id=entry.workspace_id,
        actor_id=entry.actor_id,
        actor_name=entry.actor_name,
        attempt_id=entry.attempt_id,
        experiment_id=entry.experiment_id,
        experiment_name=entry.experiment_name,
        payload=entry.payload,
        prev_hash=entry.prev_hash,
    )


def _update_sql(update: tuple[QuerySet[Any], dict[str, Any]]) -> tuple[str, list[Any]]:
    """An ORM update, compiled as QuerySet.update() would run it."""
    queryset, values = update
    query = queryset.query.chain(UpdateQuery)
    query.add_update_values(values)
    sql, params = query.get_compiler(queryset.db).as_sql()
    return sql, list(params)


def _lock_and_read_head(update: tuple[QuerySet[Any], dict[str, Any]] | None) -> tuple[int, str] | None:
    """Apply the caller's `update` (one row), take the append lock, then read the chain's
    head (seq, hash), or None when the chain is empty.

    PostgreSQL: one round trip carrying the statements. Under READ COMMITTED each
    statement takes its own snapshot when it starts, so the head is read after the lock
    is held and sees every entry committed before it. SQLite: the connection uses BEGIN
    IMMEDIATE, so this transaction already holds the database's single write lock.
    """
    table = connection.ops.quote_name(AuditEntry._meta.db_table)
    head_sql = f'SELECT "seq", "hash" FROM {table} ORDER BY "seq" DESC LIMIT 1'  # noqa: S608 - our own table name
    statements = [_update_sql(update)] if update is not None else []
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            statements.append(("SELECT pg_advisory_xact_lock(%s)", [_APPEND_LOCK_KEY]))
            statements.append((head_sql, []))
            cursor.execute("; ".join(sql for sql, _ in statements), [p for _, params in statements for p in params])
            if update is not None:
                _check_one_row(cursor.rowcount)
            for _ in statements[1:]:
                cursor.nextset()
        else:
            if update is not None:
                cursor.execute(*statements[0])
                _check_one_row(cursor.rowcount)
            cursor.execute(head_sql)
        row = cursor.fetchone()
    return (row[0], row[1]) if row else None


def _check_one_row(count: int) -> None:
    if count != 1:
        raise DatabaseError(f"The update that goes with this audit entry changed {count} rows, not 1.")


def append_entry(
    *,
    kind: EntryKind | str,
    workspace: Workspace | None = None,
    actor: Any = None,
    actor_name: str = "",
    attempt: ConclusionAttempt | None = None,
    experiment_id: str = "",
    experiment_name: str = "",
    payload: dict[str, Any] | None = None,
    update: tuple[QuerySet[Any], dict[str, Any]] | None = None,
) -> AuditEntry:
    """Append one entry to the chain and return it.

    `update` is an update of exactly one row (a queryset and its new values) that
    belongs with this entry, such as an attempt's projection: it is applied in the same
    transaction, and on PostgreSQL in the same round trip as the lock.

    Runs in its own transaction, or inside the caller's when one is open, so the
    entry commits together with the caller's other writes. No savepoint: if the
    append fails, the caller's transaction is rolled back with it (a record of
    intent must never commit without its entry).
    """
    payload_text = canonical_json(payload or {})
    with transaction.atomic(savepoint=False):
        head = _lock_and_read_head(update)
        seq, prev_hash = (head[0] + 1, head[1]) if head else (1, GENESIS_HASH)
        created_at = timezone.now()
        entry = AuditEntry(
            seq=seq,
            kind=str(kind),
            created_at=created_at,
            workspace=workspace,
            actor=actor,
            actor_name=actor_name,
            attempt=attempt,
            experiment_id=experiment_id,
            experiment_name=experiment_name,
            payload=payload_text,
            prev_hash=prev_hash,
        )
        entry.hash = hash_of(entry)
        entry.save(force_insert=True)
    return entry


def display_name(user: Any) -> str:
    """The name an audit row keeps for a person, as it is at the time of acting."""
    if user is None:
        return ""
    full = user.get_full_name() if hasattr(user, "get_full_name") else ""
    return f"{full} ({user.get_username()})" if full else user.get_username()


# --- Verification (issue 6): verify_audit and audit_digest share these ------------------

BREAK_EDITED = "edited content"
BREAK_MISSING = "missing entry"
BREAK_REORDERED = "reordered"
BREAK_INSERTED = "inserted entry"
BREAK_LINK = "broken link"
DIGEST_TRUNCATED = "truncated"
DIGEST_REWRITTEN = "rewritten history"
# How far a renumbered entry is searched for its original seq (to tell a deletion or an
# insertion that was hidden by renumbering from a plain edit). Costs hashes only at a break.
_RENUMBER_SEARCH = 16


@dataclass(frozen=True, slots=True)
class ChainBreak:
    """Where and how the chain stops being the one that was written."""

    seq: int
    entry_id: int | None
    problem: str
    detail: str

    def __str__(self) -> str:
        where = f"seq {self.seq}" + (f" (entry id {self.entry_id})" if self.entry_id is not None else "")
        return f"{where}: {self.problem}: {self.detail}"


@dataclass(frozen=True, slots=True)
class Digest:
    """The chain's head at one moment, kept outside the database by an operator."""

    count: int
    head_seq: int
    head_hash: str
    created_at: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "head_seq": self.head_seq,
            "head_hash": self.head_hash,
            "created_at": self.created_at,
        }

    @classmethod
    def from_json(cls, text: str) -> Digest:
        """Parse a digest file; ValueError with a readable message when it is not one."""
        try:
            data = json.loads(text)
        except ValueError:
            raise ValueError("the digest file is not JSON") from None
        if not isinstance(data, dict):
            raise ValueError("the digest file is not a JSON object")
        count, head_seq, head_hash = data.get("count"), data.get("head_seq"), data.get("head_hash")
        for name, value in (("count", count), ("head_seq", head_seq)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f'the digest\'s "{name}" is not a whole number')
        if not isinstance(head_hash, str) or len(head_hash) != 64 or head_hash.strip("0123456789abcdef"):
            raise ValueError('the digest\'s "head_hash" is not a SHA-256 hex digest')
        return cls(count=count, head_seq=head_seq, head_hash=head_hash, created_at=str(data.get("created_at") or ""))


@dataclass(slots=True)
class VerifyResult:
    """What walking the chain found. `ok` only when the chain and the digest both hold."""

    count: int = 0
    head_seq: int = 0
    head_hash: str = GENESIS_HASH
    first_break: ChainBreak | None = None
    digest_break: ChainBreak | None = None

    @property
    def ok(self) -> bool:
        return self.first_break is None and self.digest_break is None


def _written_seq(entry: Any) -> int | None:
    """The seq an entry was hashed with, when it has been renumbered by a little."""
    for distance in range(1, _RENUMBER_SEARCH + 1):
        for candidate in (entry.seq + distance, entry.seq - distance):
            if candidate > 0 and hash_of(entry, seq=candidate) == entry.hash:
                return candidate
    return None


def _diagnose(entry: Any, following: Any, expected_seq: int, prev_hash: str, previous: Any) -> ChainBreak | None:
    """None when `entry` continues the chain; else the most precise account of the break.

    `following` (the next entry, or None) tells a swapped pair or an inserted entry from
    an edit; `previous` is the last entry that verified.
    """
    if entry.seq != expected_seq:
        if entry.seq > expected_seq:
            gap = f"seq {expected_seq}" if entry.seq == expected_seq + 1 else f"seq {expected_seq} to {entry.seq - 1}"
            return ChainBreak(
                expected_seq, None, BREAK_MISSING, f"{gap} not found before seq {entry.seq} (entry id {entry.id})"
            )
        return ChainBreak(entry.seq, entry.id, BREAK_REORDERED, f"seq {entry.seq} comes after seq {expected_seq - 1}")
    content_ok = hash_of(entry) == entry.hash
    link_ok = entry.prev_hash == prev_hash
    if content_ok and link_ok:
        return None
    here = f"seq {entry.seq}"
    if following is not None and following.prev_hash == prev_hash and following.seq == entry.seq + 1:
        # The next entry links to our last good one: this one does not belong here.
        if entry.prev_hash == following.hash:
            return ChainBreak(
                entry.seq,
                entry.id,
                BREAK_REORDERED,
                f"{here} and seq {following.seq} (entry id {following.id}) are swapped: each links to the other",
            )
        return ChainBreak(
            entry.seq,
            entry.id,
            BREAK_INSERTED,
            f"{here} is not part of the chain: seq {following.seq} (entry id {following.id}) links past it "
            f"to seq {entry.seq - 1}",
        )
    if not content_ok:
        written = _written_seq(entry)
        if written is not None and written > entry.seq:
            count = written - entry.seq
            return ChainBreak(
                entry.seq,
                entry.id,
                BREAK_MISSING,
                f"this entry was written as seq {written}: {count} entr{'y' if count == 1 else 'ies'} before it "
                "were deleted and the rest renumbered",
            )
        if written is not None and previous is not None and entry.prev_hash == previous.prev_hash:
            return ChainBreak(
                previous.seq,
                previous.id,
                BREAK_INSERTED,
                f"seq {previous.seq} is not part of the chain: entry id {entry.id}, written as seq {written}, "
                f"links to the entry before it and was renumbered to seq {entry.seq}",
            )
        if written is not None:
            return ChainBreak(
                entry.seq,
                entry.id,
                BREAK_INSERTED,
                f"this entry was written as seq {written}: entries were inserted before it",
            )
        return ChainBreak(
            entry.seq,
            entry.id,
            BREAK_EDITED,
            "its content no longer matches its hash"
            + ("" if link_ok else f", and it does not link to seq {entry.seq - 1}"),
        )
    return ChainBreak(
        entry.seq,
        entry.id,
        BREAK_LINK,
        f"its prev_hash {entry.prev_hash[:12]}… is not the hash of seq {entry.seq - 1} ({prev_hash[:12]}…): "
        f"seq {entry.seq - 1} was rewritten with a recomputed hash, or this entry was",
    )


def verify_chain(entries: Iterable[Any], digest: Digest | None = None) -> VerifyResult:
    """Walk entries in seq order and check every hash, link and seq; stream-friendly.

    `entries` may be model instances or any objects with the hashed fields plus `id`
    and `hash` (e.g. values_list(named=True) rows). Only the first break is kept, but
    the walk goes on to the end so the count and head are those of the table. With a
    `digest`, also checks the table only grew since: the entry at the digest's head
    seq still has its hash (so nothing before it changed) and nothing was cut.
    """
    result = VerifyResult()
    expected_seq, prev_hash, previous = 1, GENESIS_HASH, None
    hash_at_digest: str | None = None
    iterator: Iterator[Any] = iter(entries)
    entry = next(iterator, None)
    while entry is not None:
        following = next(iterator, None)
        if result.first_break is None:
            result.first_break = _diagnose(entry, following, expected_seq, prev_hash, previous)
        if digest is not None and entry.seq == digest.head_seq:
            hash_at_digest = entry.hash
        result.count += 1
        result.head_seq, result.head_hash = entry.seq, entry.hash
        expected_seq, prev_hash, previous = entry.seq + 1, entry.hash, entry
        entry = following
    if digest is not None:
        result.digest_break = _check_digest(result, digest, hash_at_digest)
    return result


def _check_digest(result: VerifyResult, digest: Digest, hash_at_digest: str | None) -> ChainBreak | None:
    if digest.head_seq == 0:
        return None  # a digest of the empty chain: any chain grew from it
    if result.count < digest.count or hash_at_digest is None:
        return ChainBreak(
            digest.head_seq,
            None,
            DIGEST_TRUNCATED,
            f"the digest of {digest.created_at or 'an earlier time'} recorded {digest.count} entries up to seq "
            f"{digest.head_seq}; the table now has {result.count}, up to seq {result.head_seq}",
        )
    if hash_at_digest != digest.head_hash:
        return ChainBreak(
            digest.head_seq,
            None,
            DIGEST_REWRITTEN,
            f"seq {digest.head_seq} has hash {hash_at_digest[:12]}…, the digest of "
            f"{digest.created_at or 'an earlier time'} recorded {digest.head_hash[:12]}…: the history up to it "
            "was rewritten",
        )
    return None


def current_digest() -> Digest:
    """The chain's head and count now, read consistently (head first, then count up to it)."""
    head = AuditEntry.objects.order_by("-seq").values_list("seq", "hash").first()
    if head is None:
        return Digest(count=0, head_seq=0, head_hash=GENESIS_HASH, created_at=format_timestamp(timezone.now()))
    count = AuditEntry.objects.filter(seq__lte=head[0]).count()
    return Digest(count=count, head_seq=head[0], head_hash=head[1], created_at=format_timestamp(timezone.now()))


# The fields the chain walk reads; used with values_list(named=True) to skip model instances.
CHAIN_FIELDS = (
    "id",
    "seq",
    "kind",
    "created_at",
    "workspace_id",
    "actor_id",
    "actor_name",
    "attempt_id",
    "experiment_id",
    "experiment_name",
    "payload",
    "prev_hash",
    "hash",
)

_STATE_BY_KIND = {
    EntryKind.CONCLUSION_REQUESTED: "requested",
    EntryKind.CONCLUSION_SUCCEEDED: "succeeded",
    EntryKind.CONCLUSION_FAILED: "failed",
    EntryKind.CONCLUSION_UNKNOWN: "unknown",
}
_RECONCILED_STATES = {"applied": "reconciled_applied", "not_applied": "reconciled_not_applied"}


def attempt_state_from_entry(kind: str, payload: dict[str, Any]) -> str | None:
    """The attempt state an entry leaves behind, or None for entries that say nothing of it.

    The kind decides, except for a reconciliation, whose payload says which way it went:
    "outcome" ("applied" / "not_applied"), or else the "state" it recorded.
    """
    if kind == EntryKind.CONCLUSION_RECONCILED:
        stated = payload.get("state")
        fallback = stated if stated in _RECONCILED_STATES.values() else None
        return _RECONCILED_STATES.get(str(payload.get("outcome")), fallback)
    return _STATE_BY_KIND.get(kind)


@dataclass(frozen=True, slots=True)
class ProjectionMismatch:
    """A ConclusionAttempt row that disagrees with its audit entries."""

    attempt_id: int
    detail: str

    def __str__(self) -> str:
        return f"attempt #{self.attempt_id}: {self.detail}"


def verify_projections(attempts: Iterable[Any], entries: Iterable[Any]) -> Iterator[ProjectionMismatch]:
    """Check each attempt against its entries, streaming both sides (a merge join).

    `attempts`: ordered by id, with id, state, workspace_id, actor_id, experiment_id.
    `entries`: the entries that belong to an attempt, ordered by (attempt_id, seq), with
    attempt_id, kind, payload, workspace_id, actor_id, experiment_id. The state must be
    the one the latest entry leaves, and the request's identity that of its first entry.
    """
    entry_iter = iter(entries)
    pending = next(entry_iter, None)
    for attempt in attempts:
        while pending is not None and pending.attempt_id < attempt.id:
            yield ProjectionMismatch(pending.attempt_id, "entries exist for an attempt that is not in the table")
            skipped = pending.attempt_id
            while pending is not None and pending.attempt_id == skipped:
                pending = next(entry_iter, None)
        first = None
        state = None
        while pending is not None and pending.attempt_id == attempt.id:
            first = first or pending
            try:
                payload = json.loads(pending.payload or "{}")
            except ValueError:
                payload = {}
            state = attempt_state_from_entry(pending.kind, payload if isinstance(payload, dict) else {}) or state
            pending = next(entry_iter, None)
        if first is None:
            yield ProjectionMismatch(attempt.id, "has no audit entries")
            continue
        if first.kind != EntryKind.CONCLUSION_REQUESTED:
            yield ProjectionMismatch(attempt.id, f"its first entry is {first.kind}, not conclusion_requested")
        for name in ("workspace_id", "actor_id", "experiment_id"):
            if getattr(first, name) != getattr(attempt, name):
                yield ProjectionMismatch(
                    attempt.id, f"{name} is {getattr(attempt, name)!r}, its entries say {getattr(first, name)!r}"
                )
        if state != attempt.state:
            yield ProjectionMismatch(attempt.id, f"state is {attempt.state!r}, its entries say {state!r}")
    while pending is not None:
        yield ProjectionMismatch(pending.attempt_id, "entries exist for an attempt that is not in the table")
        skipped = pending.attempt_id
        while pending is not None and pending.attempt_id == skipped:
            pending = next(entry_iter, None)
