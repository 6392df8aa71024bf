"""Reads for bookmarks: a workspace's bookmarks, the pinned strip, stars and bookmark activity."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from django.core.cache import cache

from experiments.mixpanel.experiment import Experiment
from experiments.models import AuditEntry, Bookmark, BookmarkKind, EntryKind, Workspace
from experiments.selectors import experiment_list as list_selectors
from experiments.selectors.experiment_list import (
    _STATUS_RANK,
    NO_COPY_MESSAGE,
    ExperimentListSnapshot,
    ExperimentListUnavailable,
)
from experiments.selectors.workspaces import WorkspaceAccess


@dataclass(frozen=True, slots=True)
class BookmarkItem:
    """A bookmark as the pages show it: the experiment's current state, and whether the user may change it.

    `experiment` is the experiment as the workspace's cached list has it now, or
    None; `gone` is True only when that list is known and no longer holds it.
    """

    bookmark: Bookmark
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


def bookmark_list_for_workspace(*, workspace: Workspace) -> list[Bookmark]:
    """The workspace's bookmarks, newest first (one query, bookmark_ws_created_idx)."""
    bookmarks = list(Bookmark.objects.filter(workspace=workspace).order_by("-created_at", "-id"))
    for bookmark in bookmarks:
        bookmark.workspace = workspace  # already known: spare a query per row
    return bookmarks


def bookmark_get(*, workspace: Workspace, pk: int) -> Bookmark | None:
    """One bookmark of this workspace, or None (a bookmark of another workspace is as good as absent)."""
    bookmark = Bookmark.objects.filter(workspace=workspace, pk=pk).first()
    if bookmark is not None:
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
    base = list_selectors._list_cache_base(workspace)
    token = cache.get(base + ":good-token")
    index = list_selectors._index_for_token(base, token) if token else None
    return list_selectors._snapshot(index) if index is not None else None


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
        snapshot = list_selectors.experiment_list_cached(workspace=workspace, client=client_factory())
        if snapshot.index is None:
            raise ExperimentListUnavailable(snapshot.error or NO_COPY_MESSAGE)
    return snapshot.index.get(experiment_id)


def experiments_by_id(*, snapshot: ExperimentListSnapshot | None) -> ExperimentLookup | None:
    """Lookup by id in a list snapshot (None without one); its index builds the id map once per list."""
    if snapshot is None or snapshot.index is None:
        return None
    return snapshot.index


def bookmark_strip(*, access: WorkspaceAccess, snapshot: ExperimentListSnapshot | None) -> BookmarkStrip:
    """The experiments page's bookmark strip (newest STRIP_SIZE) and starred experiment ids: one query.

    `snapshot` is the list the page is showing, for each bookmarked experiment's status.
    The strip offers no edit controls, so its items say nothing about who may change them.
    """
    bookmarks = bookmark_list_for_workspace(workspace=access.workspace)
    shown = bookmark_items(bookmarks=bookmarks[:STRIP_SIZE], experiments_by_id=experiments_by_id(snapshot=snapshot))
    starred = frozenset(b.experiment_id for b in bookmarks if b.kind == BookmarkKind.EXPERIMENT)
    return BookmarkStrip(items=shown, total=len(bookmarks), starred=starred)


def bookmark_items(
    *,
    bookmarks: list[Bookmark],
    experiments_by_id: ExperimentLookup | None,
    may_change: Callable[[Bookmark], bool] | None = None,
) -> list[BookmarkItem]:
    """Decorate bookmarks for display (no query).

    `experiments_by_id` is the workspace's current experiment list when one is
    at hand (None when not: then nothing is marked gone, and no status shown).
    `may_change` answers, per bookmark, whether the user may edit or remove it (the
    rule is the bookmark service's); without it no item offers changes.
    """
    items = []
    for bookmark in bookmarks:
        experiment = None
        gone = False
        if bookmark.kind == BookmarkKind.EXPERIMENT and experiments_by_id is not None:
            experiment = experiments_by_id.get(bookmark.experiment_id)
            gone = experiment is None
        can_change = may_change is not None and may_change(bookmark)
        items.append(BookmarkItem(bookmark=bookmark, experiment=experiment, gone=gone, can_change=can_change))
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
