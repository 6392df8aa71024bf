"""Helpers for tests that start other processes (gunicorn, db_worker) over the test database."""

from __future__ import annotations

from urllib.parse import quote

from django.db import connection


def shared_test_database_url() -> str:
    """The test database (not the one DATABASE_URL names) as a URL for another process."""
    db = connection.settings_dict
    password = f":{quote(db['PASSWORD'], safe='')}" if db["PASSWORD"] else ""
    port = f":{db['PORT']}" if db["PORT"] else ""
    return f"postgres://{quote(db['USER'], safe='')}{password}@{db['HOST'] or '127.0.0.1'}{port}/{db['NAME']}"
