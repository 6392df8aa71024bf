"""Database triggers that make the audit table append-only.

Kept in one module so the migration and the test suite (which must lift them to
flush a transactional test database) use the same SQL.
"""

from __future__ import annotations

TABLE = "experiments_auditentry"
MESSAGE = "audit entries are append-only"

_SQLITE_INSTALL = [
    f"CREATE TRIGGER IF NOT EXISTS auditentry_no_update BEFORE UPDATE ON {TABLE} "
    f"BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END;",
    f"CREATE TRIGGER IF NOT EXISTS auditentry_no_delete BEFORE DELETE ON {TABLE} "
    f"BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END;",
]
_SQLITE_DROP = [
    "DROP TRIGGER IF EXISTS auditentry_no_update;",
    "DROP TRIGGER IF EXISTS auditentry_no_delete;",
]
_PG_INSTALL = [
    "CREATE OR REPLACE FUNCTION experiments_audit_append_only() RETURNS trigger "
    f"LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION '{MESSAGE}'; END; $$;",
    f"CREATE OR REPLACE TRIGGER auditentry_no_update_delete BEFORE UPDATE OR DELETE ON {TABLE} "
    "FOR EACH ROW EXECUTE FUNCTION experiments_audit_append_only();",
    f"CREATE OR REPLACE TRIGGER auditentry_no_truncate BEFORE TRUNCATE ON {TABLE} "
    "FOR EACH STATEMENT EXECUTE FUNCTION experiments_audit_append_only();",
]
_PG_DROP = [
    f"DROP TRIGGER IF EXISTS auditentry_no_update_delete ON {TABLE};",
    f"DROP TRIGGER IF EXISTS auditentry_no_truncate ON {TABLE};",
]


def install_statements(vendor: str) -> list[str]:
    return _PG_INSTALL if vendor == "postgresql" else _SQLITE_INSTALL


def drop_statements(vendor: str) -> list[str]:
    return _PG_DROP if vendor == "postgresql" else _SQLITE_DROP


def install(connection) -> None:  # noqa: ANN001 - a Django connection or schema_editor.connection
    with connection.cursor() as cursor:
        for sql in install_statements(connection.vendor):
            cursor.execute(sql)


def drop(connection) -> None:  # noqa: ANN001
    with connection.cursor() as cursor:
        for sql in drop_statements(connection.vendor):
            cursor.execute(sql)
