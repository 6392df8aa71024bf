"""Reads for the experiments list: the cached, indexed list from Mixpanel, filtered, sorted and paged."""

from __future__ import annotations

import datetime as dt
import pickle
import threading
import time
import uuid
import zlib
from bisect import bisect_right
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.utils import timezone

from experiments import metrics
from experiments.mixpanel import client as mixpanel
from experiments.mixpanel import shapes
from experiments.mixpanel.errors import MixpanelError
from experiments.mixpanel.experiment import STATUSES, ExperimentSummary
from experiments.models import Workspace

# Mixpanel's list call has no filtering, sorting or paging, so a workspace's whole list
# is fetched, then filtered, sorted and paged here. The client keeps a summary of each
# experiment (ExperimentSummary), never the whole object. Three keys in Django's cache
# (shared across processes when REDIS_URL is set):
#   <base>:fresh  {"token"}                    lives EXPERIMENT_LIST_CACHE_SECONDS: "do not ask Mixpanel yet"
#   <base>:good   {"token", "fetched_at", "packed"}  the last good copy, kept long for outages
#   <base>:failed {"error"}                    a short back-off after a failed read
#   <base>:good-token, <base>:good-at          the last good copy's token and when it was read (small)
#   <base>:invalid                             set by a change we made: the next read asks Mixpanel
#   <base>:viewed, <base>:wanted               a page read the list lately / was served a copy past
#                                              its fresh period: the worker reads it again
#                                              (services.list_refresh), so pages never wait for it
# "packed" is the summaries pickled and zlib-compressed: for 10,000 experiments 0.66 MB,
# against 1.9 MB pickled alone and 15.8 MB for the whole objects pickled (make bench, B8),
# which is what Redis holds and every cold process reads.
# Each process keeps the indexed lists of the tokens it last saw (_LIST_INDEXES, least
# recently used out first past EXPERIMENT_LIST_MEMORY_EXPERIMENTS), so a warm request costs
# one small cache read plus work on one page of rows, whatever the list's size. A Refresh
# anywhere writes a new token, and every process notices it on its next read.

LIST_GOOD_COPY_SECONDS = 7 * 24 * 3600
LIST_FAILURE_BACKOFF_SECONDS = 15
# A process notes a page's read of a list (<base>:viewed) at most this often.
VIEW_NOTE_SECONDS = 30.0
# Its version changes with the shape of ExperimentSummary: an older pickled copy would lack the new fields.
LIST_CACHE_PREFIX = "experiment-list:v4"
NO_COPY_MESSAGE = "The experiment list could not be read from Mixpanel and no earlier copy is available."
NOT_ASKED_MESSAGE = (
    "Mixpanel was not asked for this list just now, because reading your other workspaces already took a while. "
    "Reload the page in a moment, or open the workspace."
)
# Order of the "status" sort: the lifecycle, then anything unexpected.
_STATUS_RANK = {status: rank for rank, status in enumerate(STATUSES)}
_MEMO_LIMIT = 256


class _ListIndex:
    """One fetched list with what every request needs precomputed once.

    Per-status counts, a lowercase search blob per experiment, sort orders and
    the results of recent (status, q, sort) selections are computed at most once
    per token per process. A search that has not been seen yet (every keystroke)
    scans all blobs joined in one string with str.find, at C speed, instead of
    testing 10,000 blobs one by one in Python.
    """

    __slots__ = (
        "_by_id",
        "_derived",
        "_haystack",
        "_lock",
        "_orders",
        "_positions",
        "_ranks",
        "_selections",
        "_starts",
        "blobs",
        "counts",
        "experiments",
        "fetched_at",
        "token",
    )

    def __init__(self, *, token: str, fetched_at: dt.datetime, experiments: tuple[ExperimentSummary, ...]) -> None:
        self.token = token
        self.fetched_at = fetched_at
        self.experiments = experiments
        self.blobs = tuple(_search_blob(e) for e in experiments)
        counts = dict.fromkeys(("all", *STATUSES), 0)
        counts["all"] = len(experiments)
        for experiment in experiments:
            if experiment.status in counts:
                counts[experiment.status] += 1
        self.counts = counts
        self._orders: dict[str, tuple[int, ...]] = {}
        self._by_id: dict[str, ExperimentSummary] | None = None
        self._positions: dict[str, int] | None = None
        self._ranks: dict[str, list[int]] = {}
        self._haystack: str | None = None
        self._starts: list[int] = []
        self._selections: dict[tuple[str, str, str], tuple[tuple[int, ...], dict[str, int]]] = {}
        self._derived: dict[str, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def derived(self, name: str, compute: Callable[[], Any], *, max_age: float) -> Any:
        """What another selector computes from this whole list (decisions owed), kept for
        `max_age` seconds: a warm page then pays for it once a minute, not on every view."""
        kept = self._derived.get(name)
        now = time.monotonic()
        if kept is not None and now - kept[0] < max_age:
            return kept[1]
        value = compute()
        self._derived[name] = (now, value)
        return value

    def order(self, sort: str) -> tuple[int, ...]:
        """Indexes of the experiments in `sort` order (memoised)."""
        order = self._orders.get(sort)
        if order is None:
            order = _sort_order(self.experiments, sort)
            self._orders[sort] = order
        return order

    def rank(self, sort: str) -> list[int]:
        """rank[i] is experiment i's position in `sort` order (memoised)."""
        ranks = self._ranks.get(sort)
        if ranks is None:
            ranks = [0] * len(self.experiments)
            for position, i in enumerate(self.order(sort)):
                ranks[i] = position
            self._ranks[sort] = ranks
        return ranks

    def search(self, terms: list[str]) -> list[int]:
        """Indexes of the experiments whose blob holds every term (in no particular order)."""
        if self._haystack is None:
            starts, offset = [], 0
            for blob in self.blobs:
                starts.append(offset)
                offset += len(blob) + 1
            self._starts = starts
            # "\x00" never occurs in a term, so no match straddles two experiments.
            self._haystack = "\x00".join(self.blobs)
        haystack, starts, blobs = self._haystack, self._starts, self.blobs
        terms = sorted(terms, key=len, reverse=True)  # the longest is usually the rarest
        first, rest = terms[0], terms[1:]
        last, hits = len(starts) - 1, []
        find, append = haystack.find, hits.append
        position = find(first)
        while position != -1:
            i = bisect_right(starts, position) - 1
            if not rest or all(term in blobs[i] for term in rest):
                append(i)
            position = find(first, starts[i + 1]) if i < last else -1
        return hits

    def get(self, experiment_id: str) -> ExperimentSummary | None:
        """One experiment by id (the id map is built on first use)."""
        if self._by_id is None:
            self._by_id = {e.id: e for e in self.experiments}
        return self._by_id.get(experiment_id)

    def select(self, *, status: str, q: str, sort: str) -> tuple[tuple[int, ...], dict[str, int]]:
        """The matching indexes in order, and the per-tab counts of the search (memoised)."""
        key = (status, q, sort)
        found = self._selections.get(key)
        if found is not None:
            return found
        terms = _terms(q)
        experiments = self.experiments
        if terms:
            matched = sorted(self.search(terms), key=self.rank(sort).__getitem__)
            counts = dict.fromkeys(self.counts, 0)
            counts.update(Counter(experiments[i].status for i in matched))
            counts["all"] = len(matched)
        else:
            matched, counts = self.order(sort), self.counts
        if status != "all":
            matched = [i for i in matched if experiments[i].status == status]
        found = (tuple(matched), counts)
        with self._lock:
            if len(self._selections) >= _MEMO_LIMIT:
                self._selections.clear()
            self._selections[key] = found
        return found

    def among(self, experiment_ids: Iterable[str], *, q: str, sort: str | None = None) -> tuple[int, ...]:
        """Indexes of the listed experiments among `experiment_ids` that match `q`, in `sort`
        order (None: any order). The list's Waiting tabs are a few experiments picked by id from our own
        records, not by Mixpanel's status: this costs their number, not the list's length."""
        if self._positions is None:
            self._positions = {e.id: i for i, e in enumerate(self.experiments)}
        terms, blobs = _terms(q), self.blobs
        found = [
            i
            for i in (self._positions.get(experiment_id) for experiment_id in experiment_ids)
            if i is not None and all(term in blobs[i] for term in terms)
        ]
        return tuple(sorted(found, key=self.rank(sort).__getitem__) if sort else found)


def _terms(q: str) -> list[str]:
    return [term for term in q.casefold().replace("\x00", " ").split() if term]


def _search_blob(experiment: ExperimentSummary) -> str:
    parts = [
        experiment.name,
        experiment.id,
        experiment.creator_name or "",
        experiment.creator_email or "",
        experiment.hypothesis or "",
        *experiment.tags,
    ]
    return "\n".join(parts).casefold()


def _sort_order(experiments: tuple[ExperimentSummary, ...], sort: str) -> tuple[int, ...]:
    names = [(e.name.casefold(), e.id) for e in experiments]
    indexes = range(len(experiments))
    descending = sort.startswith("-")
    column = sort.lstrip("-")
    if column == "status":
        order = sorted(indexes, key=lambda i: (_STATUS_RANK.get(experiments[i].status, 99), names[i]))
        return tuple(reversed(order) if descending else order)
    if column in ("start", "end", "days", "exposures"):
        values = _sort_values(experiments, column)
        # Experiments without the value go last in either direction.
        known = sorted((i for i in indexes if values[i] is not None), key=lambda i: (values[i], names[i]))
        if descending:
            known.reverse()
        unknown = sorted((i for i in indexes if values[i] is None), key=names.__getitem__)
        return tuple(known + unknown)
    order = sorted(indexes, key=names.__getitem__, reverse=descending)
    return tuple(order)


def _sort_values(experiments: tuple[ExperimentSummary, ...], column: str) -> list[Any]:
    if column == "start":
        return [e.start_date for e in experiments]
    if column == "end":
        return [e.end_date for e in experiments]
    if column == "exposures":
        return [e.exposures_total for e in experiments]
    # Days running moves with the clock; the order is taken when the list is indexed,
    # which is at most the list's freshness period old.
    now = timezone.now()
    return [shapes.days_running(e, now) for e in experiments]


# The indexed lists this process holds, {cache base key: index}, least recently used first.
_LIST_INDEXES: OrderedDict[str, _ListIndex] = OrderedDict()
_LIST_INDEXES_LOCK = threading.Lock()


def _recall(base: str) -> _ListIndex | None:
    with _LIST_INDEXES_LOCK:
        index = _LIST_INDEXES.get(base)
        if index is not None:
            _LIST_INDEXES.move_to_end(base)
        return index


def _remember(base: str, index: _ListIndex) -> None:
    """Keep `index`, then drop least recently used lists past EXPERIMENT_LIST_MEMORY_EXPERIMENTS.

    The newest list is always kept, even alone past the bound: the request using it needs it.
    """
    limit = settings.EXPERIMENT_LIST_MEMORY_EXPERIMENTS
    with _LIST_INDEXES_LOCK:
        _LIST_INDEXES[base] = index
        _LIST_INDEXES.move_to_end(base)
        held = sum(len(kept.experiments) for kept in _LIST_INDEXES.values())
        while held > limit and len(_LIST_INDEXES) > 1:
            _, dropped = _LIST_INDEXES.popitem(last=False)
            held -= len(dropped.experiments)


def _pack(experiments: tuple[ExperimentSummary, ...]) -> bytes:
    # Level 1: nearly the size of the best level at a fraction of the time, on the cold path.
    return zlib.compress(pickle.dumps(experiments, protocol=pickle.HIGHEST_PROTOCOL), 1)


def _unpack(packed: bytes) -> tuple[ExperimentSummary, ...]:
    # Only our own _pack wrote this, into our own cache: nothing from outside is unpickled.
    return pickle.loads(zlib.decompress(packed))  # noqa: S301


@dataclass(frozen=True, slots=True)
class ExperimentListSnapshot:
    """A workspace's experiment list as this request sees it.

    `stale` is True when Mixpanel failed and an earlier copy is shown; `error`
    says why, readably. With no copy at all, `experiments` is empty, `fetched_at`
    is None and `error` is set.
    """

    experiments: tuple[ExperimentSummary, ...]
    fetched_at: dt.datetime | None
    stale: bool = False
    error: str | None = None
    index: _ListIndex | None = field(default=None, repr=False, compare=False)

    @property
    def available(self) -> bool:
        return self.index is not None


@dataclass(frozen=True, slots=True)
class ExperimentPage:
    """One page of the experiments page's table, and what the tabs and pager need."""

    experiments: tuple[ExperimentSummary, ...]
    counts: dict[str, int]
    total: int
    page: int
    num_pages: int
    page_size: int

    @property
    def has_previous(self) -> bool:
        return self.page > 1

    @property
    def has_next(self) -> bool:
        return self.page < self.num_pages

    @property
    def first_number(self) -> int:
        return (self.page - 1) * self.page_size + 1 if self.total else 0

    @property
    def last_number(self) -> int:
        return min(self.page * self.page_size, self.total)


def _list_cache_base(workspace: Workspace) -> str:
    # Region and Mixpanel id are part of the key: editing a workspace never shows another's list.
    return f"{LIST_CACHE_PREFIX}:{workspace.pk}:{workspace.region}:{workspace.mixpanel_workspace_id}"


def _index_for_token(base: str, token: str) -> _ListIndex | None:
    index = _recall(base)
    if index is not None and index.token == token:
        return index
    good = cache.get(base + ":good")
    if not good or good.get("token") != token:
        return None
    index = _ListIndex(token=token, fetched_at=good["fetched_at"], experiments=_unpack(good["packed"]))
    _remember(base, index)
    return index


def _snapshot(index: _ListIndex, *, stale: bool = False, error: str | None = None) -> ExperimentListSnapshot:
    return ExperimentListSnapshot(index.experiments, index.fetched_at, stale=stale, error=error, index=index)


def _stale_snapshot(base: str, error: str) -> ExperimentListSnapshot:
    good = cache.get(base + ":good-token")
    index = _index_for_token(base, good) if good else None
    if index is None:
        return ExperimentListSnapshot((), None, stale=False, error=error)
    return _snapshot(index, stale=True, error=error)


def experiment_list_cached(
    *, workspace: Workspace, client: Any = None, refresh: bool = False, ask_mixpanel: bool = True
) -> ExperimentListSnapshot:
    """The workspace's experiments, from the cache while fresh, else from Mixpanel.

    `refresh=True` asks Mixpanel now (the Refresh control). When Mixpanel fails,
    the last good copy is returned marked stale with the error; with no copy, an
    empty snapshot with the error. Never raises for an upstream failure.
    `ask_mixpanel=False` never calls Mixpanel: without a fresh copy, the last good
    copy marked stale (or no copy) with NOT_ASKED_MESSAGE, for a page that has
    already waited long enough on other workspaces' lists.
    """
    base = _list_cache_base(workspace)
    if not refresh:
        found = cache.get_many([base + ":fresh", base + ":failed", base + ":invalid"])
        _note_view(base)
        fresh = found.get(base + ":fresh")
        if fresh:
            index = _index_for_token(base, fresh["token"])
            if index is not None:
                return _served(_snapshot(index), "hit")
        failed = found.get(base + ":failed")
        if failed:
            # Mixpanel failed moments ago: do not make every page view wait for it again.
            return _served(_stale_snapshot(base, failed["error"]), "stale")
        if not found.get(base + ":invalid"):
            # Past its fresh period: the last copy now (its age is on the page), and the worker
            # reads the list again. Only a change made here (invalid) makes the page wait.
            good = cache.get(base + ":good-token")
            index = _index_for_token(base, good) if good else None
            if index is not None:
                cache.set(base + ":wanted", True, LIST_GOOD_COPY_SECONDS)
                return _served(_snapshot(index), "revalidate")
        if not ask_mixpanel:
            return _served(_stale_snapshot(base, NOT_ASKED_MESSAGE), "stale")
    try:
        # No client given: the workspace's own, built only now that Mixpanel must be
        # asked, so a missing configuration is one more readable MixpanelError.
        if client is None:
            client = mixpanel.client_for(workspace)
        experiments = tuple(client.list_experiments(workspace.mixpanel_workspace_id))
    except MixpanelError as exc:
        error = str(exc) or MixpanelError.default_message
        # Until the back-off ends, every page shows the copy with this error (even after a failed Refresh).
        cache.delete(base + ":fresh")
        cache.set(base + ":failed", {"error": error}, min(LIST_FAILURE_BACKOFF_SECONDS, _fresh_seconds()))
        return _served(_stale_snapshot(base, error), "stale")
    index = _ListIndex(token=uuid.uuid4().hex, fetched_at=timezone.now(), experiments=experiments)
    _remember(base, index)
    packed = _pack(experiments)
    cache.set_many(
        {
            base + ":good": {"token": index.token, "fetched_at": index.fetched_at, "packed": packed},
            base + ":good-token": index.token,
            base + ":good-at": index.fetched_at,
        },
        LIST_GOOD_COPY_SECONDS,
    )
    cache.set(base + ":fresh", {"token": index.token}, _fresh_seconds())
    cache.delete_many([base + ":failed", base + ":invalid", base + ":wanted"])
    return _served(_snapshot(index), "miss")


# When this process last noted a page's read of each list, {cache base key: monotonic time}.
_VIEW_NOTES: dict[str, float] = {}


def _note_view(base: str) -> None:
    """Note that a page read this list lately, so the worker keeps it fresh (at most one cache
    write per list per VIEW_NOTE_SECONDS in this process)."""
    now = time.monotonic()
    if now - _VIEW_NOTES.get(base, -VIEW_NOTE_SECONDS) >= VIEW_NOTE_SECONDS:
        _VIEW_NOTES[base] = now
        cache.set(base + ":viewed", timezone.now(), settings.EXPERIMENT_LIST_VIEWED_SECONDS)


@dataclass(frozen=True, slots=True)
class ListKeeping:
    """What the worker needs to know to keep one workspace's list fresh (one cache read for all)."""

    fetched_at: dt.datetime | None
    fresh: bool
    viewed_at: dt.datetime | None
    wanted: bool
    invalid: bool


def experiment_list_keeping(*, workspaces: list[Workspace]) -> dict[int, ListKeeping]:
    """Per workspace pk: how old its last good copy is, whether it is fresh, when a page last
    read it and whether a page was served it past its fresh period. One cache round trip."""
    bases = {workspace.pk: _list_cache_base(workspace) for workspace in workspaces}
    suffixes = (":good-at", ":fresh", ":viewed", ":wanted", ":invalid")
    found = cache.get_many([base + suffix for base in bases.values() for suffix in suffixes])
    return {
        pk: ListKeeping(
            fetched_at=found.get(base + ":good-at"),
            fresh=base + ":fresh" in found,
            viewed_at=found.get(base + ":viewed"),
            wanted=bool(found.get(base + ":wanted")),
            invalid=bool(found.get(base + ":invalid")),
        )
        for pk, base in bases.items()
    }


def experiment_list_last_copy(*, workspace: Workspace) -> ExperimentListSnapshot | None:
    """The last good copy of the workspace's list, or None; never asks Mixpanel and, unlike a
    page's read, notes no view (the worker's own reads must not keep a list "viewed")."""
    base = _list_cache_base(workspace)
    token = cache.get(base + ":good-token")
    index = _index_for_token(base, token) if token else None
    return _snapshot(index) if index is not None else None


def list_cache_key(*, workspace: Workspace, suffix: str) -> str:
    """A key of this workspace's list in the cache, for the worker's lock and back-off beside it."""
    return _list_cache_base(workspace) + ":" + suffix


def _served(snapshot: ExperimentListSnapshot, result: str) -> ExperimentListSnapshot:
    """Count a read of a list as a hit, a miss or stale, with the age of the copy served."""
    metrics.list_cache_total.labels(result).inc()
    if snapshot.fetched_at is not None:
        metrics.list_copy_age_seconds.observe(max(0.0, (timezone.now() - snapshot.fetched_at).total_seconds()))
    return snapshot


def _fresh_seconds() -> int:
    return max(1, settings.EXPERIMENT_LIST_CACHE_SECONDS)


def invalidate_experiment_list(*, workspace: Workspace) -> None:
    """Make the next read of this workspace's list ask Mixpanel (in every process).

    The last good copy is kept: it is still the fallback if Mixpanel then fails.
    """
    base = _list_cache_base(workspace)
    cache.delete_many([base + ":fresh", base + ":failed"])
    # Not "past its fresh period": this copy is known to be out of date, so no page is served it.
    cache.set(base + ":invalid", True, LIST_GOOD_COPY_SECONDS)


def experiment_list_page(
    *,
    snapshot: ExperimentListSnapshot,
    status: str,
    q: str,
    sort: str,
    page: int,
    page_size: int,
    only: Iterable[str] | None = None,
) -> ExperimentPage:
    """One page of the filtered, searched and sorted list; a page past the end shows the last one.

    `only` picks the experiments by id instead of by `status` (the list's Waiting tabs).
    """
    if snapshot.index is None:
        empty = dict.fromkeys(("all", *STATUSES), 0)
        return ExperimentPage((), empty, 0, 1, 1, page_size)
    matched, counts = snapshot.index.select(status="all" if only is not None else status, q=q, sort=sort)
    if only is not None:
        matched = snapshot.index.among(only, q=q, sort=sort)
    num_pages = max(1, -(-len(matched) // page_size))
    page = min(max(1, page), num_pages)
    start = (page - 1) * page_size
    experiments = snapshot.index.experiments
    rows = tuple(experiments[i] for i in matched[start : start + page_size])
    return ExperimentPage(rows, counts, len(matched), page, num_pages, page_size)


@dataclass(frozen=True, slots=True)
class ListedExperiment:
    """An experiment looked up in the workspace's list.

    `experiment` is None when the list does not hold it, or when no list could be read
    at all; then `unavailable` says why, readably.
    """

    experiment: ExperimentSummary | None
    unavailable: str | None = None


def experiment_list_among_count(*, snapshot: ExperimentListSnapshot, experiment_ids: Iterable[str], q: str) -> int:
    """How many of `experiment_ids` the list holds that match `q` (a Waiting tab's count)."""
    if snapshot.index is None:
        return 0
    return len(snapshot.index.among(experiment_ids, q=q))


def experiment_lookup(*, workspace: Workspace, client: Any = None, experiment_id: str) -> ListedExperiment:
    """One experiment of the workspace's (cached) list, as data: never raises for Mixpanel's failures."""
    snapshot = experiment_list_cached(workspace=workspace, client=client)
    if snapshot.index is None:
        return ListedExperiment(None, unavailable=snapshot.error or NO_COPY_MESSAGE)
    return ListedExperiment(snapshot.index.get(experiment_id))


class ExperimentListUnavailable(Exception):
    """Mixpanel failed and no copy of the list exists, so nothing can be looked up."""
