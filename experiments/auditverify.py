"""Verifying the audit trail: the hash chain, a kept digest, the attempt rows and the
workspaces' settings.

verify_audit and audit_digest share these. The chain proves the entries are the
ones written; the attempt check proves every ConclusionAttempt column an auditor
reads (on the audit screens or in the export) is what its entries say; the settings
check proves each workspace's notification and approval settings are the ones its last
settings_changed entry recorded.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from django.utils import timezone

from experiments import audit_payloads
from experiments.auditlog import GENESIS_HASH, format_timestamp, hash_of
from experiments.models import PLAN_KINDS, AuditEntry, ConclusionAttempt, EntryKind, Workspace

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
        return _diagnose_content(entry, previous, link_ok)
    return ChainBreak(
        entry.seq,
        entry.id,
        BREAK_LINK,
        f"its prev_hash {entry.prev_hash[:12]}… is not the hash of seq {entry.seq - 1} ({prev_hash[:12]}…): "
        f"seq {entry.seq - 1} was rewritten with a recomputed hash, or this entry was",
    )


def _diagnose_content(entry: Any, previous: Any, link_ok: bool) -> ChainBreak:
    """An entry whose content no longer matches its hash: renumbered after a deletion or
    an insertion (it verifies at another seq), or edited."""
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


@dataclass(frozen=True, slots=True)
class ProjectionMismatch:
    """A ConclusionAttempt row that disagrees with its audit entries."""

    attempt_id: int
    detail: str

    def __str__(self) -> str:
        return f"attempt #{self.attempt_id}: {self.detail}"


# The attempt columns verify_projections reads: identity, then everything entries set.
_CHECKED_COLUMNS = tuple(
    dict.fromkeys(audit_payloads.REQUEST_COLUMNS + audit_payloads.OUTCOME_COLUMNS + audit_payloads.REVIEW_COLUMNS)
)
ATTEMPT_FIELDS = ("id", "action", *audit_payloads.ENTRY_COLUMNS, *_CHECKED_COLUMNS)
# The entry fields it reads, in (attempt_id, seq) order.
ENTRY_FIELDS = ("attempt_id", "kind", "payload", *audit_payloads.ENTRY_COLUMNS)
# What an attempt holds before any outcome is recorded.
# (Entries written before two-person approval existed carry no expiry or review columns, and
# those before approval's switch-off was recorded on attempts no approval_off_since.)
_NO_OUTCOME = {
    "failure_reason": "",
    "http_status": None,
    "duration_ms": None,
    "finished_at": None,
    "expires_at": None,
    "reviewer_id": None,
    "reviewer_name": "",
    "review_note": "",
    "reviewed_at": None,
    "approval_off_since": None,
    "experiment_modified": None,
    "plan_hash": "",
    "approval_rules": [],
}
_SHOWN_CHARS = 60


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "…"


def _payload(entry: Any) -> dict[str, Any]:
    try:
        payload = json.loads(entry.payload or "{}")
    except ValueError:
        return {}
    return payload if isinstance(payload, dict) else {}


def _attempt_problems(attempt: Any, entries: list[Any]) -> Iterator[str]:
    """How one attempt row differs from what its entries (in seq order) wrote."""
    first = entries[0]
    # The requested entry's kind is hashed: it vouches for the attempt's action. A press
    # that needed a second person's approval starts with the approval request instead.
    kinds = audit_payloads.ENTRY_KINDS.get(attempt.action, {})
    first_kinds = {kinds.get(state) for state in ConclusionAttempt.FIRST_STATES}
    if first.kind not in first_kinds:
        yield f"action is {_shown(attempt.action)}, its first entry is {first.kind}"
    # An approval request is the first entry of either action, so its hashed "action" vouches
    # instead (entries from before it was recorded say nothing and pass).
    recorded_action = _payload(first).get("action")
    if recorded_action is not None and recorded_action != attempt.action:
        yield f"action is {_shown(attempt.action)}, its first entry says {_shown(recorded_action)}"
    for name in audit_payloads.ENTRY_COLUMNS:
        if getattr(first, name) != getattr(attempt, name):
            yield f"{name} is {_shown(getattr(attempt, name))}, its entries say {_shown(getattr(first, name))}"
    expected: dict[str, Any] = dict(_NO_OUTCOME)
    for entry in entries:
        expected.update(audit_payloads.projection_of(_payload(entry)))
    for name in _CHECKED_COLUMNS:
        if name not in expected:
            yield f"no entry records its {name}"
            continue
        actual = audit_payloads.as_json(getattr(attempt, name))
        if actual != expected[name]:
            yield f"{name} is {_shown(actual)}, its entries say {_shown(expected[name])}"


def verify_projections(attempts: Iterable[Any], entries: Iterable[Any]) -> Iterator[ProjectionMismatch]:
    """Check each attempt against its entries, streaming both sides (a merge join).

    `attempts`: ordered by id, with ATTEMPT_FIELDS. `entries`: the entries that belong
    to an attempt, ordered by (attempt_id, seq), with ENTRY_FIELDS. Every column of the
    row must be the one its entries wrote, and its identity that of its first entry.
    """
    entry_iter = iter(entries)
    pending = next(entry_iter, None)
    for attempt in attempts:
        while pending is not None and pending.attempt_id < attempt.id:
            yield ProjectionMismatch(pending.attempt_id, "entries exist for an attempt that is not in the table")
            skipped = pending.attempt_id
            while pending is not None and pending.attempt_id == skipped:
                pending = next(entry_iter, None)
        own = []
        while pending is not None and pending.attempt_id == attempt.id:
            own.append(pending)
            pending = next(entry_iter, None)
        if not own:
            yield ProjectionMismatch(attempt.id, "has no audit entries")
            continue
        for problem in _attempt_problems(attempt, own):
            yield ProjectionMismatch(attempt.id, problem)
    while pending is not None:
        yield ProjectionMismatch(pending.attempt_id, "entries exist for an attempt that is not in the table")
        skipped = pending.attempt_id
        while pending is not None and pending.attempt_id == skipped:
            pending = next(entry_iter, None)


# --- Workspace settings ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SettingsMismatch:
    """A workspace whose settings are not the ones its last settings_changed entry recorded."""

    workspace_id: int
    name: str
    detail: str

    def __str__(self) -> str:
        return f"workspace #{self.workspace_id} ({self.name}): {self.detail}"


# The workspace columns verify_workspace_settings reads, and the entries it reads (seq order).
WORKSPACE_FIELDS = (
    "id",
    "name",
    "webhook_url_sealed",
    "webhook_url_hint",
    "email_bookmarkers",
    "requires_approval",
    "approval_window_hours",
    "approval_off_at",
    "approval_when",
    *Workspace.REMINDER_FIELDS,
)
SETTINGS_ENTRY_FIELDS = ("workspace_id", "seq", "payload")
SETTINGS_ENTRY_KIND = EntryKind.SETTINGS_CHANGED


def verify_workspace_settings(workspaces: Iterable[Any], entries: Iterable[Any]) -> Iterator[SettingsMismatch]:
    """Check each workspace's settings against its last settings_changed entry (or, with none,
    against the defaults). `entries`: the settings_changed entries with SETTINGS_ENTRY_FIELDS,
    in seq order; `workspaces`: rows with WORKSPACE_FIELDS. A change made around the chain (the
    database by hand, an admin form that skipped the service) shows here."""
    last: dict[int, Any] = {}
    for entry in entries:
        last[entry.workspace_id] = entry
    for workspace in workspaces:
        entry = last.get(workspace.id)
        expected = audit_payloads.default_workspace_settings()
        if entry is not None:
            try:
                recorded = json.loads(entry.payload or "{}").get(audit_payloads.SETTINGS)
            except (ValueError, AttributeError):
                recorded = None
            if not isinstance(recorded, dict):
                yield SettingsMismatch(
                    workspace.id, workspace.name, f"its last settings change (seq {entry.seq}) records no settings"
                )
                continue
            expected.update(recorded)
        if entry is not None:
            source = f"its last settings change (seq {entry.seq}) says"
        else:
            source = "no settings change is chained, so it should be the default,"
        actual = audit_payloads.workspace_settings(workspace)
        for name, value in actual.items():
            if expected.get(name) != value:
                yield SettingsMismatch(
                    workspace.id, workspace.name, f"{name} is {_shown(value)}, {source} {_shown(expected.get(name))}"
                )


# --- Sealed plans ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlanMismatch:
    """A sealed plan whose row is not what its latest plan entry recorded."""

    workspace_id: int
    experiment_id: str
    detail: str

    def __str__(self) -> str:
        return f"plan of experiment {self.experiment_id} (workspace #{self.workspace_id}): {self.detail}"


# The SealedPlan columns verify_sealed_plans reads, and the plan entries it reads (seq order).
PLAN_ROW_FIELDS = ("id", "workspace_id", "experiment_id", "seal_entry_id", *audit_payloads.PLAN_COLUMNS)
PLAN_ENTRY_FIELDS = ("id", "seq", "kind", "workspace_id", "experiment_id", "payload")
PLAN_ENTRY_KINDS = PLAN_KINDS


def verify_sealed_plans(rows: Iterable[Any], entries: Iterable[Any]) -> Iterator[PlanMismatch]:
    """Check each SealedPlan row against the latest of its plan entries (its seal, or the last
    change), and that its seal entry is its first. A plan edited in the database, a seal whose
    row was deleted, or a row no entry wrote shows here; the chain proves the entries themselves."""
    first: dict[tuple[int, str], Any] = {}
    last: dict[tuple[int, str], Any] = {}
    for entry in entries:
        key = (entry.workspace_id, entry.experiment_id)
        if entry.kind == EntryKind.PLAN_SEALED and key not in first:
            first[key] = entry
        last[key] = entry
    seen = set()
    for row in rows:
        key = (row.workspace_id, row.experiment_id)
        seen.add(key)
        entry = last.get(key)
        if entry is None or key not in first:
            yield PlanMismatch(row.workspace_id, row.experiment_id, "no plan_sealed entry records this seal")
            continue
        if first[key].id != row.seal_entry_id:
            yield PlanMismatch(
                row.workspace_id,
                row.experiment_id,
                f"its seal entry is #{row.seal_entry_id}, the chain's is #{first[key].id}",
            )
        try:
            recorded = json.loads(entry.payload or "{}").get("sealed")
        except (ValueError, AttributeError):
            recorded = None
        if not isinstance(recorded, dict):
            yield PlanMismatch(
                row.workspace_id, row.experiment_id, f"its latest plan entry (seq {entry.seq}) records no plan"
            )
            continue
        actual = audit_payloads.plan_columns(row)
        for name in audit_payloads.PLAN_COLUMNS:
            if actual.get(name) != recorded.get(name):
                yield PlanMismatch(
                    row.workspace_id,
                    row.experiment_id,
                    f"{name} is {_shown(actual.get(name))}, its latest plan entry (seq {entry.seq}) says "
                    f"{_shown(recorded.get(name))}",
                )
    for key in first.keys() - seen:
        yield PlanMismatch(key[0], key[1], "the chain sealed this plan, and its row is gone")
