"""Readiness checks: /readyz (this app server: the database, its migrations, the cache) and
/readyz/worker (a task worker beats, and the queue is not falling behind)."""

from __future__ import annotations

import logging
import uuid

from django.conf import settings
from django.core.cache import cache
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.migrations.executor import MigrationExecutor

from experiments.selectors import metrics as metrics_selectors

logger = logging.getLogger(__name__)

OK = "ok"


def readiness() -> dict[str, str]:
    """Each check's state: "ok", or a word saying what is wrong. Failures are logged
    with their type only; the answer never carries an error's text."""
    database = _database()
    return {
        "database": database,
        # Migrations are read from the database, so they are unknown while it is down.
        "migrations": _migrations() if database == OK else "unknown",
        "cache": _cache(),
    }


def _database() -> str:
    try:
        with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:
        logger.warning("Readiness: the database did not answer (%s).", type(exc).__name__)
        return "unreachable"
    return OK


def _migrations() -> str:
    try:
        executor = MigrationExecutor(connections[DEFAULT_DB_ALIAS])
        pending = executor.migration_plan(executor.loader.graph.leaf_nodes())
    except Exception as exc:
        logger.warning("Readiness: could not read the applied migrations (%s).", type(exc).__name__)
        return "unknown"
    if pending:
        logger.warning("Readiness: %s migration(s) not applied.", len(pending))
        return "pending"
    return OK


def _cache() -> str:
    # A unique key per probe, so two processes probing at once cannot read each other's value.
    key = f"readyz:{uuid.uuid4().hex}"
    try:
        cache.set(key, OK, timeout=10)
        answered = cache.get(key)
        cache.delete(key)
    except Exception as exc:
        logger.warning("Readiness: the cache did not answer (%s).", type(exc).__name__)
        return "unreachable"
    return OK if answered == OK else "unreachable"


def worker_readiness() -> dict[str, str]:
    """The worker's checks: "heartbeat" (a worker beat within WORKER_STALE_SECONDS: "ok",
    "stale" or "none") and "queue" (no task due for longer than WORKER_MAX_DELAY_SECONDS:
    "ok" or "behind"); "unknown" for both while the database does not answer."""
    try:
        beats = metrics_selectors.worker_heartbeats()
        queue = metrics_selectors.task_queue()
    except Exception as exc:
        logger.warning("Worker readiness: the database did not answer (%s).", type(exc).__name__)
        return {"heartbeat": "unknown", "queue": "unknown"}
    latest = min(beats.values(), default=None)  # seconds since the most recent beat
    fresh = latest is not None and latest <= settings.WORKER_STALE_SECONDS
    heartbeat = OK if fresh else ("none" if latest is None else "stale")
    behind = queue.oldest_due_seconds is not None and queue.oldest_due_seconds > settings.WORKER_MAX_DELAY_SECONDS
    return {"heartbeat": heartbeat, "queue": "behind" if behind else OK}
