"""Loaded with `-p` before pytest-django configures Django: test-only defaults.

Real environment values win, so CI can point DATABASE_URL at PostgreSQL.
"""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SECRET_KEY", "test-only-secret-key-not-used-anywhere-else-0123456789")
os.environ.setdefault("DJANGO_HTTPS", "0")
os.environ.setdefault("DJANGO_STATIC_MANIFEST", "0")
os.environ.setdefault("DJANGO_ALLOWED_HOSTS", "testserver,localhost,127.0.0.1")
# A canary secret: tests assert it never shows up in logs, errors or pages.
os.environ.setdefault("MIXPANEL_SERVICE_ACCOUNT_USERNAME", "desk-test.sa")
os.environ.setdefault("MIXPANEL_SERVICE_ACCOUNT_SECRET", "CANARY-s3cr3t-do-not-leak")
# Playwright's sync API runs an event loop in the test thread; live_server needs this.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
