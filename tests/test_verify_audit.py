"""Tamper evidence: verify_audit passes an honest chain and names the first break of each tampering."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from io import StringIO
from types import SimpleNamespace

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from experiments import auditlog, auditverify, db_triggers
from experiments.models import AttemptState, AuditEntry, ConclusionAttempt, EntryKind
from tests.factories import make_attempt

TABLE = AuditEntry._meta.db_table


# --- In memory: every kind of break, classified ------------------------------------------


def build_chain(n: int) -> list[SimpleNamespace]:
    entries, prev = [], auditlog.GENESIS_HASH
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    for seq in range(1, n + 1):
        entry = SimpleNamespace(
            id=100 + seq,
            seq=seq,
            kind=EntryKind.BOOKMARK_ADDED,
            created_at=start + dt.timedelta(minutes=seq),
            workspace_id=1,
            actor_id=2,
            actor_name="Pat (pat)",
            attempt_id=None,
            experiment_id=f"exp-{seq}",
            experiment_name=f"Experiment {seq}",
            payload=auditlog.canonical_json({"n": seq}),
            prev_hash=prev,
        )
        entry.hash = auditlog.hash_of(entry)
        prev = entry.hash
        entries.append(entry)
    return entries


def rehash(entry: SimpleNamespace) -> SimpleNamespace:
    entry.hash = auditlog.hash_of(entry)
    return entry


def test_an_honest_chain_verifies():
    result = auditverify.verify_chain(build_chain(8))
    assert result.ok
    assert (result.count, result.head_seq) == (8, 8)
    assert result.head_hash == build_chain(8)[-1].hash


def test_an_empty_chain_verifies():
    result = auditverify.verify_chain([])
    assert result.ok
    assert (result.count, result.head_seq, result.head_hash) == (0, 0, auditlog.GENESIS_HASH)


def test_edited_entry_is_named():
    entries = build_chain(6)
    entries[3].payload = auditlog.canonical_json({"n": 999})
    found = auditverify.verify_chain(entries).first_break
    assert (found.seq, found.entry_id, found.problem) == (4, 104, auditverify.BREAK_EDITED)


def test_edited_and_rehashed_entry_breaks_the_next_link():
    entries = build_chain(6)
    entries[3].actor_name = "Mallory"
    rehash(entries[3])
    found = auditverify.verify_chain(entries).first_break
    assert (found.seq, found.problem) == (5, auditverify.BREAK_LINK)
    assert "seq 4 was rewritten" in found.detail


def test_deleted_entry_is_a_gap():
    entries = build_chain(6)
    del entries[2]
    found = auditverify.verify_chain(entries).first_break
    assert (found.seq, found.entry_id, found.problem) == (3, None, auditverify.BREAK_MISSING)
    assert "seq 3 not found before seq 4" in found.detail


def test_deleted_entries_hidden_by_renumbering_are_found():
    entries = build_chain(7)
    del entries[2:4]
    for entry in entries[2:]:
        entry.seq -= 2
    found = auditverify.verify_chain(entries).first_break
    assert (found.seq, found.entry_id, found.problem) == (3, 105, auditverify.BREAK_MISSING)
    assert "written as seq 5: 2 entries before it were deleted" in found.detail


def test_deleting_the_first_entry_is_found():
    entries = build_chain(3)[1:]
    found = auditverify.verify_chain(entries).first_break
    assert (found.seq, found.problem) == (1, auditverify.BREAK_MISSING)


def test_reordered_pair_is_named():
    entries = build_chain(6)
    entries[2].seq, entries[3].seq = 4, 3
    entries[2], entries[3] = entries[3], entries[2]
    found = auditverify.verify_chain(entries).first_break
    assert (found.seq, found.entry_id, found.problem) == (3, 104, auditverify.BREAK_REORDERED)
    assert "seq 4 (entry id 103) are swapped" in found.detail


def _chain_with_forgery_at_3(**changes):
    """Six honest entries with a forged copy of the third slipped in before it, the rest renumbered."""
    entries = build_chain(6)
    forged = SimpleNamespace(**vars(entries[2]))
    for name, value in {"id": 999, "actor_name": "Mallory", **changes}.items():
        setattr(forged, name, value)
    rehash(forged)
    for entry in entries[2:]:
        entry.seq += 1
    entries.insert(2, forged)
    return entries


def test_inserted_entry_is_named():
    found = auditverify.verify_chain(_chain_with_forgery_at_3(prev_hash="f" * 64)).first_break
    assert (found.seq, found.entry_id, found.problem) == (3, 999, auditverify.BREAK_INSERTED)


def test_inserted_entry_that_links_correctly_is_still_found():
    # A careful forger links the new entry to its predecessor and hashes it properly;
    # the renumbered original after it gives it away.
    found = auditverify.verify_chain(_chain_with_forgery_at_3()).first_break
    assert (found.seq, found.entry_id, found.problem) == (3, 999, auditverify.BREAK_INSERTED)


def test_digest_passes_when_the_chain_only_grew():
    entries = build_chain(9)
    digest = auditverify.Digest(count=5, head_seq=5, head_hash=entries[4].hash)
    assert auditverify.verify_chain(entries, digest=digest).ok
    assert auditverify.verify_chain(entries[:5], digest=digest).ok


def test_digest_catches_a_truncated_tail():
    entries = build_chain(9)
    digest = auditverify.Digest(count=9, head_seq=9, head_hash=entries[8].hash, created_at="2026-01-02T00:00:00Z")
    result = auditverify.verify_chain(entries[:7], digest=digest)
    assert result.first_break is None  # the rest is a valid chain: only the digest can tell
    assert result.digest_break.problem == auditverify.DIGEST_TRUNCATED
    assert "recorded 9 entries up to seq 9; the table now has 7" in result.digest_break.detail


def test_digest_catches_rewritten_history():
    entries = build_chain(9)
    digest = auditverify.Digest(count=6, head_seq=6, head_hash=entries[5].hash)
    # Rewrite entry 2 and re-hash everything after it: a perfect chain, but not the same one.
    entries[1].actor_name = "Mallory"
    prev = entries[0].hash
    for entry in entries[1:]:
        entry.prev_hash = prev
        prev = rehash(entry).hash
    result = auditverify.verify_chain(entries, digest=digest)
    assert result.first_break is None
    assert result.digest_break.problem == auditverify.DIGEST_REWRITTEN
    assert not result.ok


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "not JSON"),
        ("[1]", "not a JSON object"),
        ('{"count": "3", "head_seq": 3, "head_hash": "' + "a" * 64 + '"}', '"count" is not a whole number'),
        ('{"count": 3, "head_seq": 3, "head_hash": "xyz"}', "not a SHA-256"),
    ],
)
def test_bad_digest_files_are_refused_readably(text, message):
    with pytest.raises(ValueError, match=message):
        auditverify.Digest.from_json(text)


# --- Through the database and the commands -------------------------------------------


@contextlib.contextmanager
def triggers_lifted():
    """The tamperer's first step: remove the append-only triggers (put back afterwards)."""
    db_triggers.drop(connection)
    try:
        yield
    finally:
        db_triggers.install(connection)


def sql(statement: str, params: list | None = None) -> None:
    with connection.cursor() as cursor:
        cursor.execute(statement.format(t=TABLE), params or [])


def verify(*args: str) -> str:
    out = StringIO()
    call_command("verify_audit", *args, stdout=out)
    return out.getvalue()


def failure(*args: str) -> str:
    with pytest.raises(CommandError) as caught:
        verify(*args)
    assert caught.value.returncode == 1
    return str(caught.value)


@pytest.fixture
def trail(workspace, other_workspace, pm, outsider):
    """Four attempts, eight entries: seq 1..8."""
    make_attempt(workspace=workspace, actor=pm)
    make_attempt(workspace=other_workspace, actor=outsider, outcome=AttemptState.FAILED)
    make_attempt(workspace=workspace, actor=pm, outcome=AttemptState.UNKNOWN, reconciled="applied")
    make_attempt(workspace=workspace, actor=pm, outcome=None)
    assert list(AuditEntry.objects.values_list("seq", flat=True)) == list(range(1, 9))


def entry_id(seq: int) -> int:
    return AuditEntry.objects.get(seq=seq).pk


@pytest.mark.django_db
def test_command_passes_an_honest_database(trail):
    out = verify()
    assert "Audit chain OK: 8 entries, head seq 8" in out
    assert "every attempt agrees with its entries" in out


@pytest.mark.django_db
def test_command_passes_an_empty_database():
    assert "Audit chain OK: 0 entries" in verify()


@pytest.mark.django_db
def test_command_finds_an_edited_entry(trail):
    target = entry_id(4)
    with triggers_lifted():
        sql("UPDATE {t} SET payload = %s WHERE seq = 4", ['{"error":"nothing to see"}'])
    message = failure()
    assert f"Chain broken at seq 4 (entry id {target}): edited content" in message


@pytest.mark.django_db
def test_command_finds_a_deleted_entry(trail):
    with triggers_lifted():
        sql("DELETE FROM {t} WHERE seq = 5")
    message = failure()
    assert "Chain broken at seq 5: missing entry: seq 5 not found before seq 6" in message


@pytest.mark.django_db
def test_command_finds_a_reordered_pair(trail):
    third, fourth = entry_id(3), entry_id(4)
    with triggers_lifted():
        sql("UPDATE {t} SET seq = 1000 WHERE seq = 3")
        sql("UPDATE {t} SET seq = 3 WHERE seq = 4")
        sql("UPDATE {t} SET seq = 4 WHERE seq = 1000")
    message = failure()
    assert f"Chain broken at seq 3 (entry id {fourth}): reordered" in message
    assert f"seq 4 (entry id {third}) are swapped" in message


@pytest.mark.django_db
def test_command_finds_an_inserted_entry(trail, workspace, pm):
    with triggers_lifted():
        # Make room at seq 6, then put a forged, properly hashed entry there.
        for seq in range(8, 5, -1):
            sql("UPDATE {t} SET seq = %s WHERE seq = %s", [seq + 1, seq])
        forged = AuditEntry(
            seq=6,
            kind=EntryKind.CONCLUSION_SUCCEEDED,
            created_at=AuditEntry.objects.get(seq=5).created_at,
            workspace=workspace,
            actor=pm,
            actor_name="Pat (pat)",
            payload="{}",
            prev_hash="e" * 64,
        )
        forged.hash = auditlog.hash_of(forged)
        forged.save(force_insert=True)
    message = failure()
    assert f"Chain broken at seq 6 (entry id {forged.pk}): inserted entry" in message


@pytest.mark.django_db
def test_command_checks_attempts_against_their_entries(trail):
    attempt = ConclusionAttempt.objects.filter(state=AttemptState.FAILED).get()
    ConclusionAttempt.objects.filter(pk=attempt.pk).update(state=AttemptState.SUCCEEDED)
    message = failure()
    assert "Chain broken" not in message
    assert f"attempt #{attempt.pk}: state is 'succeeded', its entries say 'failed'" in message


@pytest.mark.django_db
def test_command_reports_an_attempt_without_entries(trail, workspace, pm):
    orphan = ConclusionAttempt.objects.create(
        workspace=workspace, actor=pm, actor_name="Pat", reason_category="other", end_date=dt.datetime.now(dt.UTC)
    )
    assert f"attempt #{orphan.pk}: has no audit entries" in failure()


@pytest.mark.django_db
def test_digest_command_prints_and_writes_the_head(trail, tmp_path):
    out = StringIO()
    path = tmp_path / "digest.json"
    call_command("audit_digest", "--output", str(path), stdout=out)
    printed = json.loads(out.getvalue())
    head = AuditEntry.objects.get(seq=8)
    assert printed["count"] == 8
    assert printed["head_seq"] == 8
    assert printed["head_hash"] == head.hash
    assert printed["created_at"].endswith("Z")
    assert json.loads(path.read_text()) == printed


@pytest.mark.django_db
def test_verify_with_digest_accepts_growth(trail, tmp_path, workspace, pm):
    path = tmp_path / "digest.json"
    call_command("audit_digest", "--output", str(path), stdout=StringIO())
    make_attempt(workspace=workspace, actor=pm)
    out = verify("--digest", str(path))
    assert "Audit chain OK: 10 entries" in out
    assert "grew from the digest's 8 entries" in out


@pytest.mark.django_db
def test_verify_with_digest_refuses_a_truncated_tail(trail, tmp_path):
    path = tmp_path / "digest.json"
    call_command("audit_digest", "--output", str(path), stdout=StringIO())
    # Drop the last attempt (its entry is seq 8, nothing after it): a valid, shorter chain.
    last = AuditEntry.objects.get(seq=8)
    with triggers_lifted():
        sql("DELETE FROM {t} WHERE seq = 8")
    ConclusionAttempt.objects.filter(pk=last.attempt_id).delete()
    verify()  # without the digest nobody could tell
    message = failure("--digest", str(path))
    assert "Digest check failed at seq 8: truncated" in message
    assert "the table now has 7, up to seq 7" in message


@pytest.mark.django_db
def test_verify_with_digest_refuses_rewritten_history(trail, tmp_path):
    path = tmp_path / "digest.json"
    call_command("audit_digest", "--output", str(path), stdout=StringIO())
    with triggers_lifted():
        # Rewrite seq 2 and re-hash every later entry: a perfect chain that is not the one we had.
        prev = AuditEntry.objects.get(seq=1).hash
        for entry in AuditEntry.objects.order_by("seq").filter(seq__gte=2):
            if entry.seq == 2:
                entry.actor_name = "Mallory"
            entry.prev_hash = prev
            entry.hash = auditlog.hash_of(entry)
            sql(
                "UPDATE {t} SET actor_name = %s, prev_hash = %s, hash = %s WHERE id = %s",
                [entry.actor_name, "t" + entry.prev_hash[1:], "t" + entry.hash[1:], entry.pk],
            )
            prev = entry.hash
        # Second pass sets the real values (unique prev_hash/hash forbid doing it in place).
        prev = AuditEntry.objects.get(seq=1).hash
        for entry in AuditEntry.objects.order_by("seq").filter(seq__gte=2):
            if entry.seq == 2:
                entry.actor_name = "Mallory"
            entry.prev_hash = prev
            entry.hash = auditlog.hash_of(entry)
            sql("UPDATE {t} SET prev_hash = %s, hash = %s WHERE id = %s", [entry.prev_hash, entry.hash, entry.pk])
            prev = entry.hash
    verify()  # the chain itself is consistent again
    message = failure("--digest", str(path))
    assert "Digest check failed at seq 8: rewritten history" in message


@pytest.mark.django_db
def test_unreadable_digest_file_is_a_readable_error(trail, tmp_path):
    missing = tmp_path / "nope.json"
    assert f"Cannot read the digest file {missing}" in failure("--digest", str(missing))
    bad = tmp_path / "bad.json"
    bad.write_text('{"count": 1}')
    assert "is not a usable digest" in failure("--digest", str(bad))


@pytest.mark.django_db(transaction=True)
def test_the_benchmark_trail_verifies(workspace, pm):
    """The benchmarks' bulk loader writes the service's payload shapes: verify_audit passes on it."""
    from tests.bench.data import AuditGenerator

    generator = AuditGenerator(workspaces=[workspace], actors=[pm], capacity=500)
    generator.grow_to(500)  # every state the loader writes, reconciled ones included
    assert set(ConclusionAttempt.objects.values_list("state", flat=True)) == {
        AttemptState.SUCCEEDED,
        AttemptState.FAILED,
        AttemptState.UNKNOWN,
        AttemptState.RECONCILED_APPLIED,
    }
    out = StringIO()
    call_command("verify_audit", stdout=out)
    assert "every attempt agrees with its entries" in out.getvalue()
