"""The audit trail's hash chain: canonical serialisation, hashing and appending.

Verifying the chain lives in experiments.auditverify.

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
from types import SimpleNamespace
from typing import Any

from django.db import connection, transaction
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
    # isoformat, not strftime: %Y does not pad years before 1000 on every platform.
    return value.astimezone(dt.UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def hashed_fields(entry: Any, *, seq: int | None = None) -> dict[str, Any]:
    """The fields of an entry its hash covers, as they are hashed (the time as text): the one
    list of them, which the API's feed and the SIEM stream also publish so anyone can re-hash.

    `entry` is an AuditEntry or a row with the same attributes; `seq` asks for another position
    (how verify_audit recognises renumbering).
    """
    return {
        "seq": entry.seq if seq is None else seq,
        "kind": entry.kind,
        "created_at": format_timestamp(entry.created_at),
        "workspace_id": entry.workspace_id,
        "actor_id": entry.actor_id,
        "actor_name": entry.actor_name,
        "attempt_id": entry.attempt_id,
        "experiment_id": entry.experiment_id,
        "experiment_name": entry.experiment_name,
        "payload": entry.payload,
        "prev_hash": entry.prev_hash,
    }


def hash_of(entry: Any, *, seq: int | None = None) -> str:
    """The SHA-256 of an entry's canonical serialisation (the chain's link), from its stored
    fields; verify_audit recomputes it."""
    content = canonical_json(hashed_fields(entry, seq=seq))
    return hashlib.sha256(content.encode("utf-8")).hexdigest()


def entry_hash(**fields: Any) -> str:
    """The hash of an entry not built as a row (a migration's): the fields of `hashed_fields`."""
    return hash_of(SimpleNamespace(**fields))


def _lock_and_read_head() -> tuple[int, str] | None:
    """Take the append lock, then read the chain's head (seq, hash); None when the chain is empty.

    PostgreSQL: a transaction-scoped advisory lock, so the head is read after every
    earlier append has committed. SQLite: the connection uses BEGIN IMMEDIATE, so this
    transaction already holds the database's single write lock.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_APPEND_LOCK_KEY])
    return AuditEntry.objects.order_by("-seq").values_list("seq", "hash").first()


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
) -> AuditEntry:
    """Append one entry to the chain and return it.

    Runs in its own transaction, or inside the caller's when one is open, so the
    entry commits together with the caller's other writes. No savepoint: if the
    append fails, the caller's transaction is rolled back with it (a record of
    intent must never commit without its entry).
    """
    payload_text = canonical_json(payload or {})
    with transaction.atomic(savepoint=False):
        head = _lock_and_read_head()
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
