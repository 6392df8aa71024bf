"""The audit chain: appends link up, and the database refuses changes."""

from __future__ import annotations

import pytest
from django.db import DatabaseError, connection, transaction

from experiments import auditlog
from experiments.models import AuditEntry, EntryKind


@pytest.mark.django_db
def test_entries_form_a_chain(workspace, pm):
    first = auditlog.append_entry(kind=EntryKind.BOOKMARK_ADDED, workspace=workspace, actor=pm, payload={"b": 1})
    second = auditlog.append_entry(kind=EntryKind.BOOKMARK_REMOVED, workspace=workspace, actor=pm, payload={"a": "é"})
    assert (first.seq, second.seq) == (1, 2)
    assert first.prev_hash == auditlog.GENESIS_HASH
    assert second.prev_hash == first.hash
    stored = AuditEntry.objects.get(pk=second.pk)
    assert auditlog.hash_of(stored) == stored.hash
    assert stored.payload == '{"a":"é"}'


@pytest.mark.django_db
@pytest.mark.parametrize("sql", ["UPDATE {t} SET actor_name = 'mallory'", "DELETE FROM {t}"])
def test_database_refuses_update_and_delete(workspace, pm, sql):
    auditlog.append_entry(kind=EntryKind.BOOKMARK_ADDED, workspace=workspace, actor=pm)
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql.format(t=AuditEntry._meta.db_table))
    assert AuditEntry.objects.filter(actor_name="mallory").count() == 0
    assert AuditEntry.objects.count() == 1
