"""The worker keeps the workspaces' experiment lists fresh, and tells what became owed.

Called from the worker's housekeeping tick (services.worker). Pages serve the last copy of a
list once its fresh period has passed (selectors.experiment_list) and leave the reading to
this: a person waits on Mixpanel only for a list the dashboard never read.

Which lists, each tick, in this order:
  1. those a page was served past their fresh period (wanted);
  2. those a page read within EXPERIMENT_LIST_VIEWED_SECONDS, shortly before their fresh
     copy expires, so the next view finds it fresh;
  3. every other workspace with members, every EXPERIMENT_LIST_BACKGROUND_SECONDS, so the
     reminders about what is owed go out when nobody looks.
Every workspace with members rather than only those viewed: a reminder is most needed where
nobody looks, and one list read per workspace each quarter of an hour costs Mixpanel little.

Never a flood: one reader per list at a time, whichever worker (a lock beside the list in the
cache); after a failed read, that list waits LIST_FAILURE_BACKOFF_SECONDS doubling at each
failure up to EXPERIMENT_LIST_BACKGROUND_SECONDS, and its pages keep the last copy with the
error. A tick starts no new read after MIXPANEL_DEADLINE seconds, so it stays short.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.utils import timezone

from experiments.models import Workspace
from experiments.selectors import experiment_list as list_selectors
from experiments.selectors.experiment_list import ListKeeping
from experiments.services.owed import REMINDERS_PER_RUN, owed_reminders_send

logger = logging.getLogger(__name__)

# Why a list is read again, in the order they are served.
WANTED, VIEWED, BACKGROUND = "wanted", "viewed", "background"
_PRIORITY = {WANTED: 0, VIEWED: 1, BACKGROUND: 2}


@dataclass(frozen=True, slots=True)
class Refreshed:
    """One list the worker read again: why, whether Mixpanel answered, and the reminders recorded."""

    workspace: Workspace
    why: str
    ok: bool
    reminders: int = 0


def refresh_reason(*, keeping: ListKeeping, now: dt.datetime) -> str | None:
    """Why this list is due to be read again now (WANTED, VIEWED, BACKGROUND), or None."""
    if keeping.wanted or keeping.invalid:
        return WANTED
    age = (now - keeping.fetched_at).total_seconds() if keeping.fetched_at is not None else None
    fresh_for = max(1, settings.EXPERIMENT_LIST_CACHE_SECONDS)
    # Read it again this long before it expires: two ticks (a tick may be late), at least a
    # quarter of its fresh period, at most half of it.
    lead = min(fresh_for / 2, max(fresh_for / 4, 2 * settings.WORKER_HEARTBEAT_SECONDS))
    viewed = keeping.viewed_at is not None and (now - keeping.viewed_at).total_seconds() < (
        settings.EXPERIMENT_LIST_VIEWED_SECONDS
    )
    if viewed and (age is None or not keeping.fresh or age >= fresh_for - lead):
        return VIEWED
    if age is None or age >= settings.EXPERIMENT_LIST_BACKGROUND_SECONDS:
        return BACKGROUND
    return None


def lists_keep_fresh(*, now: dt.datetime | None = None, budget_seconds: float | None = None) -> list[Refreshed]:
    """Read again the lists that are due (see the module's docstring), then record the
    reminders about what their fresh copies say is owed; returns what was read."""
    now = now or timezone.now()
    budget = settings.MIXPANEL_DEADLINE if budget_seconds is None else budget_seconds
    workspaces = list(Workspace.objects.filter(memberships__isnull=False).distinct().order_by("pk"))
    keeping = list_selectors.experiment_list_keeping(workspaces=workspaces)
    due = [(reason, ws) for ws in workspaces if (reason := refresh_reason(keeping=keeping[ws.pk], now=now))]
    due.sort(key=lambda item: (_PRIORITY[item[0]], item[1].pk))
    started = time.monotonic()
    done = []
    for reason, workspace in due:
        if time.monotonic() - started >= budget:
            break
        refreshed = list_refresh(workspace=workspace, why=reason)
        if refreshed is not None:
            done.append(refreshed)
    read = {r.workspace.pk for r in done}
    for workspace in workspaces:
        if workspace.pk not in read:
            owed_reminders_from_copy(workspace=workspace)
    return done


def owed_reminders_from_copy(*, workspace: Workspace) -> int:
    """Record the reminders of a list a page read from Mixpanel (so the worker had no need to):
    once per copy, from the cache, with no call to Mixpanel."""
    if not (workspace.webhook_url_sealed or workspace.email_bookmarkers):
        return 0  # nowhere to tell: not worth unpacking the copy
    checked = list_selectors.list_cache_key(workspace=workspace, suffix="reminded-token")
    tokens = cache.get_many([checked, list_selectors.list_cache_key(workspace=workspace, suffix="good-token")])
    if tokens.get(checked) == tokens.get(list_selectors.list_cache_key(workspace=workspace, suffix="good-token")):
        return 0  # this copy was checked already (or there is none)
    snapshot = list_selectors.experiment_list_last_copy(workspace=workspace)
    if snapshot is None or snapshot.index is None:
        return 0
    told = owed_reminders_send(workspace=workspace, snapshot=snapshot)
    if told < REMINDERS_PER_RUN:
        cache.set(checked, snapshot.index.token, list_selectors.LIST_GOOD_COPY_SECONDS)
    return told


def list_refresh(*, workspace: Workspace, why: str = BACKGROUND) -> Refreshed | None:
    """Read one workspace's list from Mixpanel and record its reminders; None when another
    worker is reading it or it is backing off after failures."""
    lock = list_selectors.list_cache_key(workspace=workspace, suffix="refreshing")
    backoff = list_selectors.list_cache_key(workspace=workspace, suffix="refresh-backoff")
    failures_key = list_selectors.list_cache_key(workspace=workspace, suffix="refresh-failures")
    if cache.get(backoff) is not None:
        return None
    # add() is atomic in Redis and in the local cache: one reader per list at a time.
    if not cache.add(lock, True, int(settings.MIXPANEL_DEADLINE) + 30):
        return None
    try:
        snapshot = list_selectors.experiment_list_cached(workspace=workspace, refresh=True)
    finally:
        cache.delete(lock)
    if snapshot.error is not None:
        failures = (cache.get(failures_key) or 0) + 1
        wait = min(
            list_selectors.LIST_FAILURE_BACKOFF_SECONDS * 2 ** (failures - 1),
            settings.EXPERIMENT_LIST_BACKGROUND_SECONDS,
        )
        cache.set(failures_key, failures, 24 * 3600)
        cache.set(backoff, True, wait)
        # Pages keep showing the last copy with the error until the next read.
        cache.set(list_selectors.list_cache_key(workspace=workspace, suffix="failed"), {"error": snapshot.error}, wait)
        logger.warning(
            "Keeping lists fresh: the list of %s (#%s) could not be read (failure %s); next try in %s s: %s",
            workspace.name,
            workspace.pk,
            failures,
            wait,
            snapshot.error,
        )
        return Refreshed(workspace, why, ok=False)
    cache.delete(failures_key)
    return Refreshed(workspace, why, ok=True, reminders=owed_reminders_send(workspace=workspace, snapshot=snapshot))
