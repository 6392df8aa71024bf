"""Many processes appending at once still make one chain: no forks, no gaps (PostgreSQL)."""

from __future__ import annotations

import threading

import pytest
from django.db import connection, connections

from experiments import auditlog, auditverify
from experiments.models import AuditEntry, EntryKind

THREADS = 12
APPENDS_EACH = 15


@pytest.mark.django_db(transaction=True)
def test_concurrent_appends_leave_one_valid_chain(workspace, pm):
    if connection.vendor != "postgresql":
        pytest.skip(
            "PostgreSQL only: SQLite admits one writer at a time by design, and the test database "
            "is in memory; run with DATABASE_URL=postgres://... to exercise the advisory lock"
        )
    start = threading.Barrier(THREADS)
    failures: list[BaseException] = []

    def append_many(thread: int) -> None:
        try:
            start.wait(timeout=30)
            for i in range(APPENDS_EACH):
                auditlog.append_entry(
                    kind=EntryKind.BOOKMARK_ADDED, workspace=workspace, actor=pm, payload={"thread": thread, "i": i}
                )
        except BaseException as exc:  # reported below, with the thread's failure
            failures.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=append_many, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "an appender hung"
    assert failures == []

    total = THREADS * APPENDS_EACH
    entries = list(AuditEntry.objects.order_by("seq"))
    result = auditverify.verify_chain(entries)
    assert result.ok, result.first_break
    assert result.count == total
    assert [e.seq for e in entries] == list(range(1, total + 1))
    assert len({e.prev_hash for e in entries}) == total  # no two entries claim the same parent: no fork
    # Each appender's own entries kept their order.
    for n in range(THREADS):
        mine = [e.payload_data["i"] for e in entries if e.payload_data["thread"] == n]
        assert mine == list(range(APPENDS_EACH))
