"""Reads. Every query the views need that is more than a one-liner lives here."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import re
import threading
import uuid
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from html import escape as html_escape
from typing import Any, Protocol
from urllib.parse import quote, urlencode

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import Exists, Func, OuterRef, Q, QuerySet, Subquery, TextField
from django.db.models.functions import Cast
from django.http import Http404
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.safestring import mark_safe

from experiments.mixpanel import STATUSES, Experiment, MixpanelError, parse_experiment
from experiments.models import (
    AttemptState,
    AuditEntry,
    Bookmark,
    BookmarkKind,
    ConclusionAttempt,
    ConclusionClaim,
    EntryKind,
    Membership,
    Role,
    Workspace,
)


@dataclass(frozen=True, slots=True)
class WorkspaceAccess:
    """A workspace as one user may see it, with that user's role in it."""

    workspace: Workspace
    role: str

    @property
    def can_conclude(self) -> bool:
        return self.role in (Role.CONCLUDER, Role.ADMIN)

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN

    @property
    def role_label(self) -> str:
        return Role(self.role).label


def workspace_access(*, user: Any, workspace_pk: int) -> WorkspaceAccess | None:
    """The user's access to one workspace, or None when they are not in it.

    Superusers act as admins of every workspace. One query either way.
    """
    if user.is_superuser:
        workspace = Workspace.objects.filter(pk=workspace_pk).first()
        return WorkspaceAccess(workspace, Role.ADMIN) if workspace else None
    membership = Membership.objects.select_related("workspace").filter(user=user, workspace_id=workspace_pk).first()
    return WorkspaceAccess(membership.workspace, membership.role) if membership else None


def workspace_list_for_user(*, user: Any) -> list[WorkspaceAccess]:
    """The workspaces a user belongs to (all of them for a superuser), by name."""
    if user.is_superuser:
        return [WorkspaceAccess(ws, Role.ADMIN) for ws in Workspace.objects.order_by("name", "id")]
    memberships: QuerySet[Membership] = (
        Membership.objects.select_related("workspace").filter(user=user).order_by("workspace__name", "workspace_id")
    )
    return [WorkspaceAccess(m.workspace, m.role) for m in memberships]


# --- Experiments list (issue 4) ---------------------------------------------------------
#
# Mixpanel's list call has no filtering, sorting or paging, so a workspace's whole list
# is fetched, then filtered, sorted and paged here. Three keys in Django's cache (shared
# across processes when REDIS_URL is set):
#   <base>:fresh  {"token"}                    lives EXPERIMENT_LIST_CACHE_SECONDS: "do not ask Mixpanel yet"
#   <base>:good   {"token", "fetched_at", "experiments"}  the last good copy, kept long for outages
#   <base>:failed {"error"}                    a short back-off after a failed read
# Each process keeps the parsed, indexed list of the token it last saw (_LIST_INDEXES), so a
# warm request costs one small cache read plus work on one page of rows, whatever the list's
# size. A Refresh anywhere writes a new token, and every process notices it on its next read.

LIST_GOOD_COPY_SECONDS = 7 * 24 * 3600
LIST_FAILURE_BACKOFF_SECONDS = 15
LIST_CACHE_PREFIX = "experiment-list:v1"
NO_COPY_MESSAGE = "The experiment list could not be read from Mixpanel and no earlier copy is available."
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
        "_haystack",
        "_lock",
        "_orders",
        "_ranks",
        "_selections",
        "_starts",
        "blobs",
        "counts",
        "experiments",
        "fetched_at",
        "token",
    )

    def __init__(self, *, token: str, fetched_at: dt.datetime, experiments: tuple[Experiment, ...]) -> None:
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
        self._by_id: dict[str, Experiment] | None = None
        self._ranks: dict[str, list[int]] = {}
        self._haystack: str | None = None
        self._starts: list[int] = []
        self._selections: dict[tuple[str, str, str], tuple[tuple[int, ...], dict[str, int]]] = {}
        self._lock = threading.Lock()

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

    def get(self, experiment_id: str) -> Experiment | None:
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
        terms = [term for term in q.casefold().replace("\x00", " ").split() if term]
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


def _search_blob(experiment: Experiment) -> str:
    parts = [
        experiment.name,
        experiment.id,
        experiment.creator_name or "",
        experiment.creator_email or "",
        experiment.hypothesis or "",
        *experiment.tags,
    ]
    return "\n".join(parts).casefold()


def _sort_order(experiments: tuple[Experiment, ...], sort: str) -> tuple[int, ...]:
    names = [(e.name.casefold(), e.id) for e in experiments]
    indexes = range(len(experiments))
    descending = sort.startswith("-")
    column = sort.lstrip("-")
    if column == "status":
        return tuple(sorted(indexes, key=lambda i: (_STATUS_RANK.get(experiments[i].status, 99), names[i])))
    if column in ("start", "end"):
        attr = "start_date" if column == "start" else "end_date"
        dates = [getattr(e, attr) for e in experiments]
        # Experiments without the date go last in either direction.
        dated = sorted((i for i in indexes if dates[i] is not None), key=lambda i: (dates[i], names[i]))
        if descending:
            dated.reverse()
        undated = sorted((i for i in indexes if dates[i] is None), key=names.__getitem__)
        return tuple(dated + undated)
    order = sorted(indexes, key=names.__getitem__, reverse=descending)
    return tuple(order)


# One parsed list per workspace per process: {cache base key: index}.
_LIST_INDEXES: dict[str, _ListIndex] = {}


@dataclass(frozen=True, slots=True)
class ExperimentListSnapshot:
    """A workspace's experiment list as this request sees it.

    `stale` is True when Mixpanel failed and an earlier copy is shown; `error`
    says why, readably. With no copy at all, `experiments` is empty, `fetched_at`
    is None and `error` is set.
    """

    experiments: tuple[Experiment, ...]
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

    experiments: tuple[Experiment, ...]
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
    index = _LIST_INDEXES.get(base)
    if index is not None and index.token == token:
        return index
    good = cache.get(base + ":good")
    if not good or good.get("token") != token:
        return None
    index = _ListIndex(token=token, fetched_at=good["fetched_at"], experiments=good["experiments"])
    _LIST_INDEXES[base] = index
    return index


def _snapshot(index: _ListIndex, *, stale: bool = False, error: str | None = None) -> ExperimentListSnapshot:
    return ExperimentListSnapshot(index.experiments, index.fetched_at, stale=stale, error=error, index=index)


def _stale_snapshot(base: str, error: str) -> ExperimentListSnapshot:
    good = cache.get(base + ":good-token")
    index = _index_for_token(base, good) if good else None
    if index is None:
        return ExperimentListSnapshot((), None, stale=False, error=error)
    return _snapshot(index, stale=True, error=error)


def experiment_list_cached(*, workspace: Workspace, client: Any, refresh: bool = False) -> ExperimentListSnapshot:
    """The workspace's experiments, from the cache while fresh, else from Mixpanel.

    `refresh=True` asks Mixpanel now (the Refresh control). When Mixpanel fails,
    the last good copy is returned marked stale with the error; with no copy, an
    empty snapshot with the error. Never raises for an upstream failure.
    """
    base = _list_cache_base(workspace)
    if not refresh:
        found = cache.get_many([base + ":fresh", base + ":failed"])
        fresh = found.get(base + ":fresh")
        if fresh:
            index = _index_for_token(base, fresh["token"])
            if index is not None:
                return _snapshot(index)
        failed = found.get(base + ":failed")
        if failed:
            # Mixpanel failed moments ago: do not make every page view wait for it again.
            return _stale_snapshot(base, failed["error"])
    try:
        experiments = tuple(client.list_experiments(workspace.mixpanel_workspace_id))
    except MixpanelError as exc:
        error = str(exc) or MixpanelError.default_message
        # Until the back-off ends, every page shows the copy with this error (even after a failed Refresh).
        cache.delete(base + ":fresh")
        cache.set(base + ":failed", {"error": error}, min(LIST_FAILURE_BACKOFF_SECONDS, _fresh_seconds()))
        return _stale_snapshot(base, error)
    index = _ListIndex(token=uuid.uuid4().hex, fetched_at=timezone.now(), experiments=experiments)
    _LIST_INDEXES[base] = index
    cache.set_many(
        {
            base + ":good": {"token": index.token, "fetched_at": index.fetched_at, "experiments": experiments},
            base + ":good-token": index.token,
        },
        LIST_GOOD_COPY_SECONDS,
    )
    cache.set(base + ":fresh", {"token": index.token}, _fresh_seconds())
    cache.delete(base + ":failed")
    return _snapshot(index)


def _fresh_seconds() -> int:
    return max(1, settings.EXPERIMENT_LIST_CACHE_SECONDS)


def invalidate_experiment_list(*, workspace: Workspace) -> None:
    """Make the next read of this workspace's list ask Mixpanel (in every process).

    The last good copy is kept: it is still the fallback if Mixpanel then fails.
    """
    base = _list_cache_base(workspace)
    cache.delete_many([base + ":fresh", base + ":failed"])


def experiment_list_page(
    *, snapshot: ExperimentListSnapshot, status: str, q: str, sort: str, page: int, page_size: int
) -> ExperimentPage:
    """One page of the filtered, searched and sorted list; a page past the end shows the last one."""
    if snapshot.index is None:
        empty = dict.fromkeys(("all", *STATUSES), 0)
        return ExperimentPage((), empty, 0, 1, 1, page_size)
    matched, counts = snapshot.index.select(status=status, q=q, sort=sort)
    num_pages = max(1, -(-len(matched) // page_size))
    page = min(max(1, page), num_pages)
    start = (page - 1) * page_size
    experiments = snapshot.index.experiments
    rows = tuple(experiments[i] for i in matched[start : start + page_size])
    return ExperimentPage(rows, counts, len(matched), page, num_pages, page_size)


def experiment_get(*, workspace: Workspace, client: Any, experiment_id: str) -> Experiment:
    """One experiment of the workspace's (cached) list; Http404 when the list does not hold it.

    Raises ExperimentListUnavailable when there is no copy of the list to look in.
    """
    snapshot = experiment_list_cached(workspace=workspace, client=client)
    if snapshot.index is None:
        raise ExperimentListUnavailable(snapshot.error or NO_COPY_MESSAGE)
    experiment = snapshot.index.get(experiment_id)
    if experiment is None:
        raise Http404("This workspace has no such experiment.")
    return experiment


class ExperimentListUnavailable(Exception):
    """Mixpanel failed and no copy of the list exists, so nothing can be looked up."""


@dataclass(frozen=True, slots=True)
class ExperimentDetail:
    """The experiment page's data: the freshest copy we could get, and whether it is fresh."""

    experiment: Experiment
    fresh: bool
    error: str | None


def experiment_detail_get(*, workspace: Workspace, client: Any, experiment_id: str) -> ExperimentDetail:
    """The experiment for its page: checked against the workspace's list, then read fresh.

    The list decides membership (404 when absent). The fresh GET adds what the list
    may leave out; if it fails or answers for another id, the list's copy is shown.
    """
    listed = experiment_get(workspace=workspace, client=client, experiment_id=experiment_id)
    try:
        fresh = client.get_experiment(workspace.mixpanel_workspace_id, experiment_id)
    except MixpanelError as exc:
        return ExperimentDetail(listed, fresh=False, error=str(exc))
    if fresh.id != experiment_id:
        return ExperimentDetail(listed, fresh=False, error="Mixpanel answered with a different experiment.")
    return ExperimentDetail(fresh, fresh=True, error=None)


# Relative times in one unit, for table cells: (below this many seconds, unit seconds, unit name).
_RELATIVE_UNITS = (
    (3600, 60, "minute"),
    (86400, 3600, "hour"),
    (86400 * 30, 86400, "day"),
    (86400 * 365, 86400 * 30, "month"),
)


def relative_time(value: dt.datetime | None, now: dt.datetime) -> str:
    """ "3 days ago" / "in 2 hours" / "" — one unit, months of 30 days, for table cells.

    Hand-written rather than django.utils.timesince: it runs for every cell of every
    row and is ten times cheaper.
    """
    if value is None:
        return ""
    seconds = (now - value).total_seconds()
    past = seconds >= 0
    seconds = abs(seconds)
    if seconds < 60:
        return "less than a minute ago" if past else "in less than a minute"
    size, name = next(((size, name) for limit, size, name in _RELATIVE_UNITS if seconds < limit), (86400 * 365, "year"))
    count = int(seconds // size)
    text = f"{count} {name}{'' if count == 1 else 's'}"
    return f"{text} ago" if past else f"in {text}"


_DONE_STATES = frozenset({AttemptState.SUCCEEDED, AttemptState.RECONCILED_APPLIED})
# A constant of our own, no upstream text in it.
_DASH = mark_safe('<span class="muted">—</span>')


@dataclass(frozen=True, slots=True)
class ExperimentRow:
    """An experiment as a table row or page section shows it, with its claim and notice.

    `claim` is the attempt holding the one-at-a-time claim, if any; `notice` is the
    answer to a force conclude just made (readable text), `notice_ok` its tone.
    The display fields are prepared once here so the row template stays a handful
    of variables: a Django template variable costs microseconds, and a page has 50 rows.
    The *_html fields are built here; every upstream value in them is escaped.
    """

    experiment: Experiment
    claim: ConclusionAttempt | None
    show_conclude: bool
    dom_id: str
    start_relative: str
    end_relative: str
    detail_url: str = ""
    conclude_url: str = ""
    notice: str = ""
    notice_ok: bool = False
    name: str = ""
    start_html: str = ""
    end_html: str = ""
    tags_html: str = ""
    creator: str = ""
    exposures: str = ""
    exp_id: str = ""
    status: str = ""
    variants: int = 0

    def __getitem__(self, key: str) -> Any:
        # Django's template lookup tries row[key] before getattr(row, key); answering it
        # spares a raised and caught TypeError per {{ row.x }}: about 30% of a row's render.
        try:
            return getattr(self, key)
        except AttributeError:
            raise KeyError(key) from None

    @property
    def concluded_by_us(self) -> bool:
        return self.claim is not None and self.claim.state in _DONE_STATES

    @property
    def in_flight(self) -> bool:
        return self.claim is not None and self.claim.state not in _DONE_STATES

    @property
    def has_actions(self) -> bool:
        return bool(self.notice) or self.claim is not None or self.show_conclude

    @property
    def status_class(self) -> str:
        status = self.experiment.status
        return status if status in _STATUS_RANK else "unknown"


def _iso(value: dt.datetime | None) -> str:
    return value.astimezone(dt.UTC).isoformat() if value is not None else ""


def _utc_text(value: dt.datetime | None) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC") if value is not None else ""


def _date_cell(value: dt.datetime | None, relative: str, empty: str) -> str:
    # Every piece is our own formatting of a parsed datetime (digits, "-", ":", "+", "T",
    # and English words): no upstream text, so nothing to escape.
    if value is None:
        return mark_safe(f'<span class="muted">{empty}</span>')  # noqa: S308
    text = _utc_text(value)
    return mark_safe(  # noqa: S308
        f'<time datetime="{_iso(value)}" title="{text}">{relative}</time><div class="small muted">{text}</div>'
    )


def _tags_html(tags: tuple[str, ...]) -> str:
    # Upstream text: each tag is escaped (html.escape, as Django's escape does), then joined.
    if not tags:
        return _DASH
    return mark_safe("".join(f'<span class="tag">{html_escape(tag)}</span>' for tag in tags))  # noqa: S308


def experiment_dom_id(experiment_id: str) -> str:
    """A safe, stable HTML id for an experiment (upstream ids are untrusted text)."""
    return "exp-" + hashlib.sha256(experiment_id.encode("utf-8")).hexdigest()[:16]


_URL_PLACEHOLDER = "EXPERIMENTIDPLACEHOLDER"
# What django.urls.reverse leaves unquoted in a path argument (RFC 3986 sub-delims and ~:@).
_PATH_SAFE = "!$&'()*+,;=~:@"


def _experiment_url(name: str, workspace: Workspace, experiment_id: str) -> str:
    """reverse(name, [workspace.pk, experiment_id]) for a page of rows, at string-replace cost.

    reverse() is resolved once per (route, workspace) with a placeholder, then the id is
    quoted exactly as reverse() would. An id our routes cannot carry (empty, or with a
    "/") gets no link rather than a 500.
    """
    if not experiment_id or "/" in experiment_id:
        return ""
    template = _URL_TEMPLATES.get((name, workspace.pk))
    if template is None:
        try:
            template = reverse(name, args=[workspace.pk, _URL_PLACEHOLDER])
        except NoReverseMatch:
            return ""
        _URL_TEMPLATES[(name, workspace.pk)] = template
    return template.replace(_URL_PLACEHOLDER, quote(experiment_id, safe=_PATH_SAFE))


_URL_TEMPLATES: dict[tuple[str, int], str] = {}


def experiment_row(
    *,
    access: WorkspaceAccess,
    experiment: Experiment,
    claim: ConclusionAttempt | None,
    now: dt.datetime | None = None,
    notice: str = "",
    notice_ok: bool = False,
) -> ExperimentRow:
    """One row. The button shows for concluders and admins on active experiments nobody has claimed."""
    now = now or timezone.now()
    conclude_url = _experiment_url("experiments:experiment-force-conclude", access.workspace, experiment.id)
    exposures = experiment.exposures_total
    start_relative = relative_time(experiment.start_date, now)
    end_relative = relative_time(experiment.end_date, now)
    return ExperimentRow(
        experiment=experiment,
        claim=claim,
        show_conclude=bool(conclude_url) and access.can_conclude and experiment.is_active and claim is None,
        detail_url=_experiment_url("experiments:experiment-detail", access.workspace, experiment.id),
        conclude_url=conclude_url,
        dom_id=experiment_dom_id(experiment.id),
        start_relative=start_relative,
        end_relative=end_relative,
        notice=notice,
        notice_ok=notice_ok,
        name=experiment.name or "(no name)",
        start_html=_date_cell(experiment.start_date, start_relative, "not started"),
        end_html=_date_cell(experiment.end_date, end_relative, "—"),
        tags_html=_tags_html(experiment.tags),
        exp_id=experiment.id,
        status=experiment.status,
        variants=experiment.variants_count,
        creator=experiment.creator_name or "—",
        exposures=str(exposures) if exposures is not None else "—",
    )


def experiment_rows(*, access: WorkspaceAccess, experiments: tuple[Experiment, ...]) -> list[ExperimentRow]:
    """Rows for one page of experiments, with their claims in one query."""
    claims = (
        claim_for_experiments(workspace=access.workspace, experiment_ids=[e.id for e in experiments])
        if experiments
        else {}
    )
    now = timezone.now()
    return [experiment_row(access=access, experiment=e, claim=claims.get(e.id), now=now) for e in experiments]


# --- Conclusion attempts (issue 5) ------------------------------------------------------


def claim_for_experiments(*, workspace: Workspace, experiment_ids: list[str]) -> dict[str, ConclusionAttempt]:
    """The attempt holding each experiment's claim (in flight, unknown or succeeded), in one query."""
    claims = ConclusionClaim.objects.filter(workspace=workspace, experiment_id__in=experiment_ids).select_related(
        "attempt"
    )
    return {claim.experiment_id: claim.attempt for claim in claims}


def attempt_list_for_experiment(*, workspace: Workspace, experiment_id: str) -> list[ConclusionAttempt]:
    """Every conclusion attempt on one experiment, newest first (index attempt_ws_exp_idx)."""
    return list(ConclusionAttempt.objects.filter(workspace=workspace, experiment_id=experiment_id).order_by("-id"))


def attempt_list_to_reconcile(*, older_than: dt.timedelta, workspace_pk: int | None = None) -> list[ConclusionAttempt]:
    """Attempts left open that reconcile_conclusions should resolve, oldest first.

    "requested" older than the threshold means the process died between intent
    and outcome (a live request finishes within MIXPANEL_DEADLINE). "unknown" is
    held to the same threshold because a PUT that timed out may still be landing
    upstream; reading it too early could call an applied attempt "not applied".
    Served by attempt_state_id_idx.
    """
    cutoff = timezone.now() - older_than
    attempts = ConclusionAttempt.objects.filter(
        state__in=[AttemptState.REQUESTED, AttemptState.UNKNOWN], created_at__lte=cutoff
    ).select_related("workspace")
    if workspace_pk is not None:
        attempts = attempts.filter(workspace_id=workspace_pk)
    return list(attempts.order_by("id"))


@dataclass(frozen=True, slots=True)
class DriftItem:
    """An experiment Mixpanel shows as concluded with no applied conclusion recorded here."""

    workspace: Workspace
    experiment: Experiment
    # States of the attempts we did record on it, newest first (often none).
    local_states: tuple[str, ...]


def conclusion_drift(*, workspace: Workspace, client: Any) -> list[DriftItem]:
    """Experiments concluded upstream (concluded, success or fail) without a
    succeeded or reconciled-applied attempt here: conclusions made outside the
    dashboard. One list call to Mixpanel (its errors propagate) and one query.
    """
    concluded = [e for e in client.list_experiments(workspace.mixpanel_workspace_id) if e.is_concluded]
    if not concluded:
        return []
    states: dict[str, list[str]] = {}
    rows = (
        ConclusionAttempt.objects.filter(workspace=workspace, experiment_id__in=[e.id for e in concluded])
        .order_by("-id")
        .values_list("experiment_id", "state")
    )
    for experiment_id, state in rows:
        states.setdefault(experiment_id, []).append(state)
    applied = {AttemptState.SUCCEEDED, AttemptState.RECONCILED_APPLIED}
    drift = [
        DriftItem(workspace=workspace, experiment=e, local_states=tuple(states.get(e.id, ())))
        for e in concluded
        if not applied.intersection(states.get(e.id, ()))
    ]
    # Most recently ended first: the freshest surprises lead the report.
    epoch = dt.datetime.min.replace(tzinfo=dt.UTC)
    drift.sort(key=lambda item: (item.experiment.end_date or epoch, item.experiment.id), reverse=True)
    return drift


# --- Audit review (issue 6) ------------------------------------------------------------
#
# The audit list pages a million ConclusionAttempt rows by keyset on `id` (unique and
# increasing with time): every page is "WHERE <filters> AND id < cursor ORDER BY id DESC
# LIMIT n+1", which an index answers in the same time at any depth. No OFFSET, and no
# COUNT(*) of the table (an approximate total comes from PostgreSQL's statistics).

AUDIT_PAGE_SIZE = 50
AUDIT_PAGE_SIZES = (10, 25, 50, 100, 200)
AUDIT_EXPORT_CHUNK = 2000
REVIEW_ALL_PERMISSION = "experiments.review_all_conclusions"
# How far created_at may run out of step with id. Both are set when the attempt is
# inserted, so they disagree by at most a transaction's length; a day is a wide margin
# that costs a day of rows at most when a date range is turned into id bounds.
_DATE_ID_SLACK = dt.timedelta(days=1)
_CURSOR_PATTERN = re.compile(r"^([ab])([0-9]{1,18})$")
_APPLIED_STATUSES = ("concluded", "success", "fail")


@dataclass(frozen=True, slots=True)
class AuditFilters:
    """The audit list's filters (all optional); the same object drives the list and export."""

    workspace_id: int | None = None
    # An actor's user id ("42") or username.
    person: str = ""
    outcome: str = ""
    # Inclusive UTC calendar dates.
    date_from: dt.date | None = None
    date_to: dt.date | None = None
    # Free text over experiment name, experiment id and reason text.
    q: str = ""

    @property
    def is_empty(self) -> bool:
        return self == AuditFilters()

    def params(self) -> list[tuple[str, str]]:
        """The filter as URL parameters, in a fixed order, empty ones left out."""
        pairs = [
            ("workspace", str(self.workspace_id) if self.workspace_id else ""),
            ("person", self.person),
            ("outcome", self.outcome),
            ("date_from", self.date_from.isoformat() if self.date_from else ""),
            ("date_to", self.date_to.isoformat() if self.date_to else ""),
            ("q", self.q),
        ]
        return [(key, value) for key, value in pairs if value]


@dataclass(frozen=True, slots=True)
class AuditPage:
    """One page of attempts, newest first, with the cursors of its neighbours."""

    rows: list[ConclusionAttempt]
    newer_cursor: str | None
    older_cursor: str | None
    page_size: int
    # Only when it is cheap (PostgreSQL statistics, unfiltered view of everything).
    approximate_total: int | None = None
    is_first_page: bool = True


def audit_can_review_all(*, user: Any) -> bool:
    """Whether `user` may read every workspace's audit (the permission, or superuser)."""
    return bool(user.is_active and user.has_perm(REVIEW_ALL_PERMISSION))


def audit_workspaces_for_user(*, user: Any) -> list[Workspace]:
    """The workspaces whose audit `user` may read, by name (one query)."""
    if audit_can_review_all(user=user):
        return list(Workspace.objects.order_by("name", "id"))
    return list(Workspace.objects.filter(memberships__user=user).order_by("name", "id"))


def _visible_attempts(user: Any) -> QuerySet[ConclusionAttempt]:
    if audit_can_review_all(user=user):
        return ConclusionAttempt.objects.all()
    # A correlated EXISTS on the membership, not a Python list of workspace ids. It keeps
    # the scan in id order: with "workspace_id IN (subquery)" SQLite reads every attempt
    # of the member's workspaces by the workspace index and sorts them all for each page
    # (O(rows) at any depth); here it walks ids newest first and stops after a page.
    # PostgreSQL plans both forms as the same semi-join.
    membership = Membership.objects.filter(user=user, workspace_id=OuterRef("workspace_id"))
    return ConclusionAttempt.objects.filter(Exists(membership))


def _day_start(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time.min, tzinfo=dt.UTC)


def _apply_audit_filters(qs: QuerySet[ConclusionAttempt], filters: AuditFilters) -> QuerySet[ConclusionAttempt]:
    if filters.workspace_id:
        qs = qs.filter(workspace_id=filters.workspace_id)  # attempt_ws_id_idx
    if filters.person:
        if filters.person.isdigit():
            qs = qs.filter(actor_id=int(filters.person))  # attempt_actor_id_idx
        else:
            # A scalar subquery (one username, one id): PostgreSQL evaluates it once and
            # scans attempt_actor_id_idx with the result, as for an id.
            user_id = get_user_model().objects.filter(username=filters.person).values("pk")[:1]
            qs = qs.filter(actor_id=Subquery(user_id))
    if filters.outcome:
        qs = qs.filter(state=filters.outcome)  # attempt_state_id_idx
    if filters.date_from or filters.date_to:
        qs = _apply_date_range(qs, filters.date_from, filters.date_to)
    if filters.q:
        # No index serves a substring search: the scan walks ids newest first and stops
        # after a page of matches, so a common word is fast and a rare one may read the
        # whole visible table (about 0.3-1 s at a million rows). Narrow by workspace,
        # person, outcome or dates first to bound it.
        qs = qs.filter(
            Q(experiment_name__icontains=filters.q)
            | Q(experiment_id__icontains=filters.q)
            | Q(reason_text__icontains=filters.q)
        )
    return qs


def _apply_date_range(
    qs: QuerySet[ConclusionAttempt], date_from: dt.date | None, date_to: dt.date | None
) -> QuerySet[ConclusionAttempt]:
    """created_at bounds (exact) plus id bounds (fast), so the scan stays in id order.

    Filtering on created_at alone lets a planner walk the primary key from the newest
    row and discard everything after the range, or read the whole range and sort it.
    Two one-row probes of attempt_created_idx turn the range into id bounds (with a
    margin, since created_at and id can disagree by a transaction's length), so the
    page is read by id from the right place; the created_at bounds keep it exact.
    """
    order = ConclusionAttempt.objects.order_by
    if date_from:
        start = _day_start(date_from)
        qs = qs.filter(created_at__gte=start)
        lowest = order("created_at", "id").filter(created_at__gte=start - _DATE_ID_SLACK).values("id")[:1]
        qs = qs.filter(id__gte=Subquery(lowest))
    if date_to:
        end = _day_start(date_to) + dt.timedelta(days=1)
        qs = qs.filter(created_at__lt=end)
        highest = order("-created_at", "-id").filter(created_at__lt=end + _DATE_ID_SLACK).values("id")[:1]
        qs = qs.filter(id__lte=Subquery(highest))
    return qs


def audit_attempts_filtered(*, user: Any, filters: AuditFilters) -> QuerySet[ConclusionAttempt]:
    """Every attempt `user` may see that matches `filters`, unordered (list and export share it)."""
    return _apply_audit_filters(_visible_attempts(user), filters)


def parse_audit_cursor(token: str | None) -> tuple[str, int] | None:
    """("older"|"newer", id) from a cursor token "b<id>" / "a<id>"; None when unusable."""
    match = _CURSOR_PATTERN.match(token or "")
    if not match:
        return None
    return ("older" if match.group(1) == "b" else "newer", int(match.group(2)))


def _approximate_attempt_total() -> int | None:
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        # The planner's row estimate, refreshed by (auto)vacuum/analyze: free to read.
        cursor.execute(
            "SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass", [ConclusionAttempt._meta.db_table]
        )
        row = cursor.fetchone()
    return int(row[0]) if row and row[0] is not None and row[0] >= 0 else None


def audit_attempt_page(
    *,
    user: Any,
    filters: AuditFilters,
    cursor: str | int | None = None,
    direction: str = "older",
    page_size: int = AUDIT_PAGE_SIZE,
) -> AuditPage:
    """One page of the attempts `user` may see, newest first, paged by keyset on id.

    `cursor` is a token from a previous page ("b<id>": older than id, "a<id>": newer
    than id) or a bare id read in `direction`; anything unusable gives the first page.
    Rows inserted between page loads never make a page skip or repeat a row. One
    query per page (plus a statistics read for the approximate total on PostgreSQL).
    """
    page_size = max(1, min(int(page_size), max(AUDIT_PAGE_SIZES)))
    if isinstance(cursor, int) and not isinstance(cursor, bool):
        position = ("newer" if direction == "newer" else "older", cursor) if cursor > 0 else None
    else:
        position = parse_audit_cursor(cursor)
    qs = audit_attempts_filtered(user=user, filters=filters).select_related("workspace")

    if position and position[0] == "newer":
        after = position[1]
        rows = list(qs.filter(id__gt=after).order_by("id")[: page_size + 1])
        more_newer = len(rows) > page_size
        rows = rows[:page_size]
        rows.reverse()
        newer = f"a{rows[0].pk}" if more_newer else None
        # We came from older rows: offer the way back even if this page is empty.
        older = f"b{rows[-1].pk}" if rows else f"b{after + 1}"
        return AuditPage(rows, newer, older, page_size, is_first_page=False)

    before = position[1] if position else None
    page_qs = qs.filter(id__lt=before) if before is not None else qs
    rows = list(page_qs.order_by("-id")[: page_size + 1])
    more_older = len(rows) > page_size
    rows = rows[:page_size]
    older = f"b{rows[-1].pk}" if more_older else None
    if before is None:
        total = _approximate_attempt_total() if filters.is_empty and audit_can_review_all(user=user) else None
        return AuditPage(rows, None, older, page_size, approximate_total=total)
    newer = f"a{rows[0].pk}" if rows else f"a{before - 1}"
    return AuditPage(rows, newer, older, page_size, is_first_page=False)


AUDIT_EXPORT_FIELDS = (
    "id",
    "created_at",
    "workspace_id",
    "workspace__name",
    "actor_id",
    "actor_name",
    "experiment_id",
    "experiment_name",
    "reason_category",
    "reason_text",
    "end_date",
    "request_body",
    "state",
    "failure_reason",
    "http_status",
    "duration_ms",
    "finished_at",
)


class _UTCTimestampText(Func):
    """A datetime column as ISO 8601 UTC text ("2026-03-01T12:00:00.123456Z"), made by the database.

    Formatting a million datetimes in Python (parse, astimezone, isoformat) was a third
    of the export's time; the database does it for free while it reads the row.
    """

    output_field = TextField()

    def as_postgresql(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, list[Any]]:
        template = "to_char(%(expressions)s AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
        return self.as_sql(compiler, connection, template=template, **extra)

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, list[Any]]:
        # Django keeps SQLite datetimes as naive UTC text "YYYY-MM-DD HH:MM:SS[.ffffff]".
        return self.as_sql(compiler, connection, template="(replace(%(expressions)s, ' ', 'T') || 'Z')", **extra)


_EXPORT_AS_TEXT = {
    "created_at": lambda: _UTCTimestampText("created_at"),
    "end_date": lambda: _UTCTimestampText("end_date"),
    "finished_at": lambda: _UTCTimestampText("finished_at"),
    # The JSON text as stored: no decode and re-encode per row.
    "request_body": lambda: Cast("request_body", output_field=TextField()),
}


def audit_export_rows(*, user: Any, filters: AuditFilters) -> Iterator[tuple[Any, ...]]:
    """Every attempt `user` may see under `filters`, newest first, streamed as tuples.

    Each tuple holds AUDIT_EXPORT_FIELDS in order; the datetimes come as ISO 8601 UTC
    text and request_body as its JSON text, both made by the database. Rows are
    values_list() tuples, not model instances, read in chunks. On PostgreSQL the read
    runs inside a transaction so Django uses a server-side cursor: outside one,
    psycopg builds the whole result before the first row (~19 s at a million rows).
    """
    columns = [_EXPORT_AS_TEXT[name]() if name in _EXPORT_AS_TEXT else name for name in AUDIT_EXPORT_FIELDS]
    qs = audit_attempts_filtered(user=user, filters=filters).order_by("-id").values_list(*columns)
    # Only PostgreSQL needs (and benefits from) the transaction; on SQLite our
    # transactions are IMMEDIATE and would hold the write lock for the whole export.
    with transaction.atomic() if connection.vendor == "postgresql" else contextlib.nullcontext():
        yield from qs.iterator(chunk_size=AUDIT_EXPORT_CHUNK)


# Attempt detail --------------------------------------------------------------------------

_OUTCOME_KINDS = (EntryKind.CONCLUSION_SUCCEEDED, EntryKind.CONCLUSION_FAILED, EntryKind.CONCLUSION_UNKNOWN)


@dataclass(frozen=True, slots=True)
class AuditTimelineEntry:
    """One audit entry of an attempt, with its payload decoded (never evaluated)."""

    entry: AuditEntry
    payload: dict[str, Any]

    @property
    def short_hash(self) -> str:
        return self.entry.hash[:12]

    @property
    def note(self) -> str:
        """The entry's own readable sentence, when it has one."""
        for key in ("reason", "message"):
            if isinstance(self.payload.get(key), str):
                return self.payload[key]
        error = self.payload.get("error")
        return error if isinstance(error, str) else ""


@dataclass(frozen=True, slots=True)
class ReturnedSummary:
    """Mixpanel's returned experiment in a few readable fields (each may be missing)."""

    status_before: str | None
    status_after: str | None
    start_date: dt.datetime | None
    end_date: dt.datetime | None
    variant_count: int | None
    exposures: int | None


@dataclass(frozen=True, slots=True)
class AuditAttemptDetail:
    """Everything the attempt page shows, decoded from the attempt's entries.

    JSON values are kept as data and pretty-printed as text; the template
    escapes all of it (it is upstream text).
    """

    attempt: ConclusionAttempt
    timeline: list[AuditTimelineEntry]
    request_body: Any = None
    before: Any = None
    # A snapshot or answer kept as text: cut at the size cap, or not JSON at all.
    before_raw: str | None = None
    returned: Any = None
    returned_raw: str | None = None
    truncated: bool = False
    error: str = ""
    error_details: dict[str, Any] = field(default_factory=dict)
    summary: ReturnedSummary | None = None
    reconciliation: dict[str, Any] = field(default_factory=dict)

    @property
    def request_body_json(self) -> str:
        return _pretty_json(self.request_body)

    @property
    def reconciled_status(self) -> str:
        """The status reconcile_conclusions read from Mixpanel (either key the service wrote)."""
        for key in ("upstream_status", "observed_status"):
            if isinstance(self.reconciliation.get(key), str):
                return self.reconciliation[key]
        return ""

    @property
    def before_json(self) -> str:
        return _pretty_json(self.before)

    @property
    def returned_json(self) -> str:
        return _pretty_json(self.returned)


def _pretty_json(value: Any) -> str:
    if value is None:
        return ""
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def _decode_payload(entry: AuditEntry) -> dict[str, Any]:
    try:
        data = json.loads(entry.payload or "{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _as_snapshot(value: Any) -> tuple[Any, str | None]:
    """(JSON value, None) or (None, text) for a snapshot stored cut as {"truncated", "text"}."""
    if isinstance(value, dict) and set(value) == {"truncated", "text"} and isinstance(value["text"], str):
        return None, value["text"]
    if isinstance(value, str):
        try:
            return json.loads(value), None
        except ValueError:
            return None, value
    return value, None


def _experiment_in(document: Any) -> Mapping[str, Any] | None:
    """The experiment object in a stored answer: the envelope's "results", or the object itself."""
    if isinstance(document, Mapping) and isinstance(document.get("results"), Mapping):
        return document["results"]
    return document if isinstance(document, Mapping) else None


def _parsed_experiment(document: Any) -> Experiment | None:
    data = _experiment_in(document)
    if data is None:
        return None
    try:
        return parse_experiment(data)
    except MixpanelError:
        return None


def _summarise(before: Any, returned: Any) -> ReturnedSummary | None:
    after = _parsed_experiment(returned)
    if after is None:
        return None
    previous = _parsed_experiment(before)
    return ReturnedSummary(
        status_before=previous.status if previous else None,
        status_after=after.status,
        start_date=after.start_date,
        end_date=after.end_date,
        variant_count=len(after.variants) if isinstance(after.variants, (list, tuple)) else None,
        exposures=after.exposures_total,
    )


def _when_text(value: Any) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _summary_from(before: Any = None, after: Any = None) -> ReturnedSummary | None:
    """The service's own summaries, for when the answer itself was cut and cannot be parsed."""
    if not isinstance(after, dict):
        return None
    variants, exposures = after.get("variants"), after.get("exposures")
    return ReturnedSummary(
        status_before=_text_or_none(before.get("status")) if isinstance(before, dict) else None,
        status_after=_text_or_none(after.get("status")),
        start_date=_when_text(after.get("start_date")),
        end_date=_when_text(after.get("end_date")),
        variant_count=variants if isinstance(variants, int) and not isinstance(variants, bool) else None,
        exposures=exposures if isinstance(exposures, int) and not isinstance(exposures, bool) else None,
    )


def _text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _error_from(payload: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    error = payload.get("error")
    details = error if isinstance(error, dict) else {}
    for candidate in (payload.get("reason"), error, details.get("message")):
        if isinstance(candidate, str) and candidate:
            return candidate, details
    return "", details


def audit_attempt_detail(*, user: Any, pk: int) -> AuditAttemptDetail | None:
    """One attempt with its timeline, or None when `user` may not see it.

    Two queries: the attempt (with its workspace) and its entries in seq order.
    Outcome payloads are read in either shape the service writes: the returned
    experiment as "returned" (JSON) / "returned_raw" (text), or as the answer's
    "response_body" text; errors as text or as {"message", "type", ...}.
    """
    attempt = _visible_attempts(user).select_related("workspace").filter(pk=pk).first()
    if attempt is None:
        return None
    entries = AuditEntry.objects.filter(attempt_id=attempt.pk).order_by("seq")  # entry_attempt_seq_idx
    timeline = [AuditTimelineEntry(entry, _decode_payload(entry)) for entry in entries]
    found: dict[str, Any] = {"request_body": attempt.request_body}
    for item in timeline:
        payload, kind = item.payload, item.entry.kind
        if kind == EntryKind.CONCLUSION_REQUESTED and "request_body" in payload:
            found["request_body"] = payload["request_body"]
        elif kind in _OUTCOME_KINDS:
            if payload.get("before") is not None:
                found["before"], found["before_raw"] = _as_snapshot(payload["before"])
            for key in ("returned", "returned_raw", "response_body"):
                if payload.get(key) not in (None, ""):
                    found["returned"], found["returned_raw"] = _as_snapshot(payload[key])
            found["truncated"] = bool(payload.get("truncated") or payload.get("response_truncated"))
            found["error"], found["error_details"] = _error_from(payload)
            found["summaries"] = (payload.get("before_summary"), payload.get("after_summary"))
        elif kind == EntryKind.CONCLUSION_RECONCILED:
            found["reconciliation"] = payload
    error = found.get("error") or ("" if attempt.state == AttemptState.SUCCEEDED else attempt.failure_reason)
    return AuditAttemptDetail(
        attempt=attempt,
        timeline=timeline,
        request_body=found.get("request_body"),
        before=found.get("before"),
        before_raw=found.get("before_raw"),
        returned=found.get("returned"),
        returned_raw=found.get("returned_raw"),
        truncated=found.get("truncated", False),
        error=error,
        error_details=found.get("error_details", {}),
        summary=_summarise(found.get("before"), found.get("returned")) or _summary_from(*found.get("summaries", ())),
        reconciliation=found.get("reconciliation", {}),
    )


# --- end of Audit review (issue 6) -----------------------------------------------------


# --- Bookmarks (issue 7) ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BookmarkItem:
    """A bookmark as the pages show it: its link, the experiment's current state, and who may change it.

    `experiment` is the experiment as the workspace's cached list has it now, or
    None; `gone` is True only when that list is known and no longer holds it.
    """

    bookmark: Bookmark
    url: str
    experiment: Experiment | None = None
    gone: bool = False
    can_change: bool = False

    @property
    def label(self) -> str:
        b = self.bookmark
        if b.kind == BookmarkKind.EXPERIMENT:
            return b.title or b.experiment_name or b.experiment_id
        return b.title or "All experiments"

    @property
    def is_view(self) -> bool:
        return self.bookmark.kind == BookmarkKind.VIEW

    @property
    def status_class(self) -> str:
        # Upstream status is untrusted text: only known values become a CSS class.
        status = self.experiment.status if self.experiment else ""
        return status if status in _STATUS_RANK else "unknown"


@dataclass(frozen=True, slots=True)
class BookmarkStrip:
    """The pinned strip of the experiments page, and which experiments carry a star."""

    items: list[BookmarkItem]
    total: int
    starred: frozenset[str]

    @property
    def more(self) -> int:
        return self.total - len(self.items)


@dataclass(frozen=True, slots=True)
class BookmarkActivity:
    """One "bookmark added/removed" line of the workspace's audit trail."""

    entry: AuditEntry
    label: str
    bookmark_kind: str

    @property
    def added(self) -> bool:
        return self.entry.kind == EntryKind.BOOKMARK_ADDED


def bookmark_toggle_url(*, workspace: Workspace, experiment_id: str) -> str:
    """The star's POST address for one experiment ("" for an id our URLs cannot carry), at string-replace cost."""
    return _experiment_url("experiments:bookmark-toggle", workspace, experiment_id)


def bookmark_url(bookmark: Bookmark) -> str:
    """Where a bookmark leads: the experiment's page, or our experiments page with the stored query.

    The link is always built here from our own route, never taken from input.
    """
    base = reverse("experiments:experiment-list", args=[bookmark.workspace_id])
    if bookmark.kind == BookmarkKind.EXPERIMENT:
        try:
            return reverse("experiments:experiment-detail", args=[bookmark.workspace_id, bookmark.experiment_id])
        except NoReverseMatch:
            # An id our URL cannot carry (a "/" in it): find it by search instead.
            return f"{base}?{urlencode({'q': bookmark.experiment_id})}"
    return f"{base}?{bookmark.view_query}" if bookmark.view_query else base


def bookmark_list_for_workspace(*, workspace: Workspace) -> list[Bookmark]:
    """The workspace's bookmarks, newest first (one query, bookmark_ws_created_idx)."""
    bookmarks = list(Bookmark.objects.filter(workspace=workspace).order_by("-created_at", "-id"))
    for bookmark in bookmarks:
        bookmark.workspace = workspace  # already known: spare a query per row
    return bookmarks


def bookmark_get(*, workspace: Workspace, pk: int) -> Bookmark:
    """One bookmark of this workspace, or 404 (a bookmark of another workspace is as good as absent)."""
    bookmark = Bookmark.objects.filter(workspace=workspace, pk=pk).first()
    if bookmark is None:
        raise Http404("No such bookmark.")
    bookmark.workspace = workspace
    return bookmark


def bookmark_for_experiment(*, workspace: Workspace, experiment_id: str) -> Bookmark | None:
    """The workspace's bookmark of one experiment, if any (one query, the unique constraint's index)."""
    bookmark = Bookmark.objects.filter(
        workspace=workspace, kind=BookmarkKind.EXPERIMENT, experiment_id=experiment_id
    ).first()
    if bookmark is not None:
        bookmark.workspace = workspace
    return bookmark


def bookmark_ids_for_experiments(
    *, workspace: Workspace, experiment_ids: list[str] | None = None
) -> dict[str, Bookmark]:
    """Experiment id -> bookmark, for the star state of rows or of one experiment page (one query)."""
    bookmarks = Bookmark.objects.filter(workspace=workspace, kind=BookmarkKind.EXPERIMENT)
    if experiment_ids is not None:
        bookmarks = bookmarks.filter(experiment_id__in=experiment_ids)
    return {b.experiment_id: b for b in bookmarks}


STRIP_SIZE = 12


class ExperimentLookup(Protocol):
    """Anything that finds an experiment by id: a dict, or a list snapshot's index."""

    def get(self, experiment_id: str, /) -> Experiment | None: ...


def experiment_list_peek(*, workspace: Workspace) -> ExperimentListSnapshot | None:
    """The last good copy of the workspace's list if the cache holds one; never asks Mixpanel.

    For pages that show experiment statuses as a courtesy (bookmarks) and must not
    wait for, or fail with, Mixpanel.
    """
    base = _list_cache_base(workspace)
    token = cache.get(base + ":good-token")
    index = _index_for_token(base, token) if token else None
    return _snapshot(index) if index is not None else None


def experiment_for_bookmark(
    *, workspace: Workspace, experiment_id: str, client_factory: Callable[[], Any]
) -> Experiment | None:
    """The experiment a person is starring, or None when the workspace's list does not hold it.

    Looks in the last good copy of the list when the cache has one (the list the
    star was shown from), so starring asks Mixpanel nothing; otherwise reads the
    list through `client_factory()`. Raises ExperimentListUnavailable when there is
    no list to look in (and MixpanelError if the client cannot be built).
    """
    snapshot = experiment_list_peek(workspace=workspace)
    if snapshot is None:
        snapshot = experiment_list_cached(workspace=workspace, client=client_factory())
        if snapshot.index is None:
            raise ExperimentListUnavailable(snapshot.error or NO_COPY_MESSAGE)
    return snapshot.index.get(experiment_id)


def experiments_by_id(*, snapshot: ExperimentListSnapshot | None) -> ExperimentLookup | None:
    """Lookup by id in a list snapshot (None without one); its index builds the id map once per list."""
    if snapshot is None or snapshot.index is None:
        return None
    return snapshot.index


def bookmark_strip(*, access: WorkspaceAccess, user: Any, snapshot: ExperimentListSnapshot | None) -> BookmarkStrip:
    """The experiments page's bookmark strip (newest STRIP_SIZE) and starred experiment ids: one query.

    `snapshot` is the list the page is showing, for each bookmarked experiment's status.
    """
    bookmarks = bookmark_list_for_workspace(workspace=access.workspace)
    shown = bookmark_items(
        bookmarks=bookmarks[:STRIP_SIZE],
        experiments_by_id=experiments_by_id(snapshot=snapshot),
        user=user,
        is_admin=access.is_admin,
    )
    starred = frozenset(b.experiment_id for b in bookmarks if b.kind == BookmarkKind.EXPERIMENT)
    return BookmarkStrip(items=shown, total=len(bookmarks), starred=starred)


def bookmark_items(
    *,
    bookmarks: list[Bookmark],
    experiments_by_id: ExperimentLookup | None,
    user: Any,
    is_admin: bool,
) -> list[BookmarkItem]:
    """Decorate bookmarks for display (no query).

    `experiments_by_id` is the workspace's current experiment list when one is
    at hand (None when not: then nothing is marked gone, and no status shown).
    """
    items = []
    for bookmark in bookmarks:
        experiment = None
        gone = False
        if bookmark.kind == BookmarkKind.EXPERIMENT and experiments_by_id is not None:
            experiment = experiments_by_id.get(bookmark.experiment_id)
            gone = experiment is None
        can_change = is_admin or (bookmark.created_by_id is not None and bookmark.created_by_id == user.pk)
        items.append(
            BookmarkItem(
                bookmark=bookmark, url=bookmark_url(bookmark), experiment=experiment, gone=gone, can_change=can_change
            )
        )
    return items


def bookmark_activity(*, workspace: Workspace, limit: int = 20) -> list[BookmarkActivity]:
    """The latest bookmark added/removed entries of the workspace's audit trail, newest first.

    One query, served by entry_ws_kind_seq_idx (workspace, kind, -seq).
    """
    entries = AuditEntry.objects.filter(
        workspace=workspace, kind__in=[EntryKind.BOOKMARK_ADDED, EntryKind.BOOKMARK_REMOVED]
    ).order_by("-seq")[:limit]
    activity = []
    for entry in entries:
        try:
            payload = entry.payload_data
        except ValueError:
            payload = {}
        if not isinstance(payload, dict):
            payload = {}
        label = str(payload.get("title") or entry.experiment_name or entry.experiment_id or "a bookmark")
        activity.append(BookmarkActivity(entry=entry, label=label, bookmark_kind=str(payload.get("kind") or "")))
    return activity
