"""Writes for bookmarks: add, edit and remove, each recorded in the audit trail."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone
from django.utils.formats import date_format

from experiments import auditlog
from experiments.mixpanel.errors import MixpanelError
from experiments.models import Bookmark, BookmarkKind, EntryKind, Workspace
from experiments.queries import DEFAULT_SORT, SORT_CHOICES, STATUS_TABS, ExperimentListQuery
from experiments.selectors import bookmarks as bookmark_selectors
from experiments.selectors import workspaces as workspace_selectors
from experiments.selectors.experiment_list import ExperimentListUnavailable

# A bookmark belongs to the workspace's team. Any member adds; the person who added
# it or a workspace admin edits or removes it. The database's partial unique
# constraints decide duplicates, so two people adding at once cannot both win.

BOOKMARK_TITLE_MAX = 120
BOOKMARK_NOTE_MAX = 1000
BOOKMARK_VIEW_QUERY_MAX = 1000
BOOKMARK_TITLE_TOO_LONG = "The title is too long: at most {limit} characters, this one has {length}."
BOOKMARK_NOTE_TOO_LONG = "The note is too long: at most {limit} characters, this one has {length}."
BOOKMARK_VIEW_ELSEWHERE = (
    "Only views of this workspace's experiments page can be bookmarked (its query, like ?status=active, "
    "or its path, like /w/1/?status=active); that points somewhere else."
)
BOOKMARK_VIEW_TOO_LONG = "That view's search is too long to bookmark."
BOOKMARK_EXPERIMENT_EXISTS = "{who} already bookmarked this experiment on {when}."
BOOKMARK_VIEW_EXISTS = "{who} already bookmarked this view (“{title}”) on {when}."
BOOKMARK_NOT_ALLOWED = "Only {who} (who added it) or a workspace admin can change or remove this bookmark."
BOOKMARK_BAD_EXPERIMENT = "That is not an experiment id this workspace knows."
BOOKMARK_GONE = "That bookmark no longer exists; someone may have just removed it."
BOOKMARK_NOT_LISTED = "This workspace's experiment list has no experiment with that id, so it cannot be bookmarked."
BOOKMARK_UNCHECKED = "The experiment could not be checked against Mixpanel, so it was not bookmarked: {error}"
BOOKMARK_ADDED = "Bookmarked “{name}” for the team."
BOOKMARK_VIEW_ADDED = "Bookmarked the view “{title}” for the team."
BOOKMARK_SAVED = "Bookmark saved."
BOOKMARK_REMOVED = "Removed the bookmark “{label}”."

# Characters a person cannot mean in a title or note; PostgreSQL refuses NUL outright.
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


# Why a change was refused (BookmarkOutcome.refusal); views answer NOT_ALLOWED with a 403.
REFUSED_INVALID = "invalid"
REFUSED_EXISTS = "exists"
REFUSED_NOT_ALLOWED = "not_allowed"
REFUSED_GONE = "gone"


@dataclass(frozen=True, slots=True)
class BookmarkOutcome:
    """What a bookmark change came to, as data: views branch on it and catch nothing.

    `ok` says whether the change was made; `message` says what happened in a sentence for a
    person; `refusal` says why not (one of REFUSED_*, "" when ok). `bookmark` is the one
    changed, or the one already there (REFUSED_EXISTS), when there is one. `starred` says
    whether the experiment carries the team's star afterwards (experiment bookmarks).
    """

    ok: bool
    message: str
    refusal: str = ""
    bookmark: Bookmark | None = None
    starred: bool = False


class _Invalid(ValueError):
    """Raised by the checks below and turned into a REFUSED_INVALID outcome by the public services."""


def _clean_text(value: str | None, *, limit: int, message: str) -> str:
    # Browsers send textarea line breaks as CRLF; count what a person typed.
    text = _CONTROL_CHARS.sub("", (value or "").replace("\r\n", "\n").replace("\r", "\n")).strip()
    if len(text) > limit:
        raise _Invalid(message.format(limit=limit, length=len(text)))
    return text


def _view_query(*, workspace: Workspace, raw: str) -> str:
    """The canonical query string for a view of `workspace`'s experiments page.

    `raw` may be a query string (with or without "?"), or a path or URL of this
    workspace's experiments page. Anything pointing elsewhere (another path, any
    scheme such as `javascript:`, any host) is refused (_Invalid). Only the
    page's own parameters are kept, with unknown values dropped as the page
    itself ignores them, in a fixed order so identical views compare equal.
    """
    text = (raw or "").strip()
    if len(text) > 4 * BOOKMARK_VIEW_QUERY_MAX:
        raise _Invalid(BOOKMARK_VIEW_TOO_LONG)
    # Backslashes and control characters are how "/\evil.example" and
    # "java\tscript:" slip past naive checks; a real view of ours has neither.
    if _CONTROL_CHARS.search(text) or any(ch in text for ch in "\t\r\n\\"):
        raise _Invalid(BOOKMARK_VIEW_ELSEWHERE)
    parts = urlsplit(text)
    if parts.scheme or parts.netloc or text.startswith("//"):
        raise _Invalid(BOOKMARK_VIEW_ELSEWHERE)
    if text.startswith("/"):
        if parts.path != reverse("experiments:experiment-list", args=[workspace.pk]):
            raise _Invalid(BOOKMARK_VIEW_ELSEWHERE)
        query = parts.query
    elif text.startswith("?"):
        query = parts.query
    else:
        query = text.split("#", 1)[0]
        if "?" in query or "/" in query.split("=", 1)[0]:
            # Something like "w/1/?status=active" or "evil.example/x": not a bare query.
            raise _Invalid(BOOKMARK_VIEW_ELSEWHERE)
    # Parsed and re-encoded exactly as the page itself reads its URL, so the
    # bookmark reproduces the filters the page applied; the page number is not
    # part of a view.
    canonical = ExperimentListQuery.from_querystring(query).with_(page=1).querystring()
    if len(canonical) > BOOKMARK_VIEW_QUERY_MAX:
        raise _Invalid(BOOKMARK_VIEW_TOO_LONG)
    return canonical


def bookmark_view_title(*, view_query: str) -> str:
    """A readable default title for a view bookmark, made from its filters."""
    view = ExperimentListQuery.from_querystring(view_query)
    parts = [dict(STATUS_TABS)[view.status] + " experiments"]
    if view.q:
        parts.append(f"matching “{view.q}”")
    if view.sort != DEFAULT_SORT:
        parts.append(f"sorted by {dict(SORT_CHOICES)[view.sort].lower()}")
    title = ", ".join(parts)
    return title if len(title) <= BOOKMARK_TITLE_MAX else title[: BOOKMARK_TITLE_MAX - 1] + "…"


def _exists_message(existing: Bookmark) -> str:
    who = existing.created_by_name or "Someone"
    when = date_format(timezone.localtime(existing.created_at), "j M Y, H:i T")
    if existing.kind == BookmarkKind.EXPERIMENT:
        return BOOKMARK_EXPERIMENT_EXISTS.format(who=who, when=when)
    return BOOKMARK_VIEW_EXISTS.format(who=who, when=when, title=str(existing))


def _bookmark_audit(*, kind: str, bookmark: Bookmark, user: Any) -> None:
    auditlog.append_entry(
        kind=kind,
        workspace=bookmark.workspace,
        actor=user,
        actor_name=auditlog.display_name(user),
        experiment_id=bookmark.experiment_id,
        experiment_name=bookmark.experiment_name,
        payload={
            "bookmark_id": bookmark.pk,
            "kind": bookmark.kind,
            "title": bookmark.title,
            "note": bookmark.note,
            "view_query": bookmark.view_query,
        },
    )


def _bookmark_insert(bookmark: Bookmark, *, user: Any, duplicate: Q, message: str) -> BookmarkOutcome:
    try:
        with transaction.atomic():
            bookmark.save(force_insert=True)
            _bookmark_audit(kind=EntryKind.BOOKMARK_ADDED, bookmark=bookmark, user=user)
    except IntegrityError:
        # The unique constraint, not a pre-check, is what refuses a second add:
        # it holds when two people press at the same moment.
        existing = Bookmark.objects.filter(duplicate, workspace=bookmark.workspace).first()
        if existing is None:
            raise
        starred = existing.kind == BookmarkKind.EXPERIMENT
        return BookmarkOutcome(False, _exists_message(existing), REFUSED_EXISTS, existing, starred=starred)
    return BookmarkOutcome(True, message, bookmark=bookmark, starred=bookmark.kind == BookmarkKind.EXPERIMENT)


def bookmark_create_experiment(
    *, workspace: Workspace, user: Any, experiment_id: str, experiment_name: str, note: str = ""
) -> BookmarkOutcome:
    """Bookmark an experiment for the workspace's team and record it in the audit trail.

    The caller has found the experiment in the workspace's list (bookmark_star does);
    `experiment_name` is kept as a snapshot so the bookmark reads well if the experiment
    disappears upstream. Refused when the id cannot be kept or the experiment is
    already bookmarked (the message says by whom and when).
    """
    experiment_id = (experiment_id or "").strip()
    if not experiment_id or len(experiment_id) > Bookmark._meta.get_field("experiment_id").max_length:
        return BookmarkOutcome(False, BOOKMARK_BAD_EXPERIMENT, REFUSED_INVALID)
    try:
        note = _clean_text(note, limit=BOOKMARK_NOTE_MAX, message=BOOKMARK_NOTE_TOO_LONG)
    except _Invalid as exc:
        return BookmarkOutcome(False, str(exc), REFUSED_INVALID)
    bookmark = Bookmark(
        workspace=workspace,
        kind=BookmarkKind.EXPERIMENT,
        experiment_id=experiment_id,
        experiment_name=(experiment_name or "")[: Bookmark._meta.get_field("experiment_name").max_length],
        note=note,
        created_by=user,
        created_by_name=auditlog.display_name(user),
    )
    duplicate = Q(kind=BookmarkKind.EXPERIMENT, experiment_id=experiment_id)
    message = BOOKMARK_ADDED.format(name=bookmark.experiment_name or experiment_id)
    return _bookmark_insert(bookmark, user=user, duplicate=duplicate, message=message)


def bookmark_star(
    *, workspace: Workspace, user: Any, experiment_id: str, client_factory: Callable[[], Any], note: str = ""
) -> BookmarkOutcome:
    """Bookmark one experiment of the workspace's list: only listed experiments may be bookmarked.

    Looks in the last good copy of the list when the cache holds one (the list the star
    was shown from), so starring asks Mixpanel nothing; otherwise reads the list through
    `client_factory()`. When there is no list to look in, nothing is bookmarked and the
    outcome says why.
    """
    experiment_id = (experiment_id or "").strip()
    try:
        experiment = bookmark_selectors.experiment_for_bookmark(
            workspace=workspace, experiment_id=experiment_id, client_factory=client_factory
        )
    except (ExperimentListUnavailable, MixpanelError) as exc:
        return BookmarkOutcome(False, BOOKMARK_UNCHECKED.format(error=exc), REFUSED_INVALID)
    if experiment is None:
        return BookmarkOutcome(False, BOOKMARK_NOT_LISTED, REFUSED_INVALID)
    return bookmark_create_experiment(
        workspace=workspace, user=user, experiment_id=experiment.id, experiment_name=experiment.name, note=note
    )


def bookmark_toggle(
    *,
    workspace: Workspace,
    user: Any,
    experiment_id: str,
    client_factory: Callable[[], Any],
    is_admin: bool,
    note: str = "",
) -> BookmarkOutcome:
    """The star: remove the experiment's team bookmark when there is one (if `user` may), else add
    one, with `note` (the star's optional note, given in the same step)."""
    existing = bookmark_selectors.bookmark_for_experiment(workspace=workspace, experiment_id=experiment_id)
    if existing is None:
        return bookmark_star(
            workspace=workspace, user=user, experiment_id=experiment_id, client_factory=client_factory, note=note
        )
    outcome = bookmark_delete(bookmark=existing, user=user, is_admin=is_admin)
    if outcome.refusal == REFUSED_GONE:
        # Someone removed it a moment ago: the outcome the person wanted.
        return BookmarkOutcome(True, BOOKMARK_REMOVED.format(label=existing), bookmark=existing)
    return outcome


def bookmark_create_view(
    *, workspace: Workspace, user: Any, query: str, title: str = "", note: str = ""
) -> BookmarkOutcome:
    """Bookmark a view (filters, search, sort) of the workspace's experiments page.

    `query` is what the page had in its URL, or a link to it: only views of this
    workspace's experiments page may be bookmarked, and only their normalised query
    string is stored. A blank title is made from the filters.
    """
    try:
        view_query = _view_query(workspace=workspace, raw=query)
        title = _clean_text(title, limit=BOOKMARK_TITLE_MAX, message=BOOKMARK_TITLE_TOO_LONG)
        note = _clean_text(note, limit=BOOKMARK_NOTE_MAX, message=BOOKMARK_NOTE_TOO_LONG)
    except _Invalid as exc:
        return BookmarkOutcome(False, str(exc), REFUSED_INVALID)
    bookmark = Bookmark(
        workspace=workspace,
        kind=BookmarkKind.VIEW,
        view_query=view_query,
        title=title or bookmark_view_title(view_query=view_query),
        note=note,
        created_by=user,
        created_by_name=auditlog.display_name(user),
    )
    duplicate = Q(kind=BookmarkKind.VIEW, view_query=view_query)
    message = BOOKMARK_VIEW_ADDED.format(title=bookmark.title)
    return _bookmark_insert(bookmark, user=user, duplicate=duplicate, message=message)


def bookmark_may_change(*, bookmark: Bookmark, user: Any, is_admin: bool | None = None) -> bool:
    """Whether `user` may edit or remove `bookmark`: whoever added it, or an admin of its workspace.

    Pass `is_admin` when the caller already knows the user's role (no query).
    """
    if user is not None and bookmark.created_by_id is not None and bookmark.created_by_id == user.pk:
        return True
    if is_admin is None:
        access = workspace_selectors.workspace_access(user=user, workspace_pk=bookmark.workspace_id)
        is_admin = access is not None and access.is_admin
    return is_admin


def _not_allowed(bookmark: Bookmark) -> BookmarkOutcome:
    message = BOOKMARK_NOT_ALLOWED.format(who=bookmark.created_by_name or "the person")
    return BookmarkOutcome(False, message, REFUSED_NOT_ALLOWED, bookmark)


def bookmark_update(
    *, bookmark: Bookmark, user: Any, note: str, title: str | None = None, is_admin: bool | None = None
) -> BookmarkOutcome:
    """Edit a bookmark's note (and title, when given): whoever added it or a workspace admin.

    Refused when not allowed, when the text is too long, or when the bookmark was
    removed meanwhile. A blank title on a view falls back to one made from its filters.
    """
    if not bookmark_may_change(bookmark=bookmark, user=user, is_admin=is_admin):
        return _not_allowed(bookmark)
    try:
        note = _clean_text(note, limit=BOOKMARK_NOTE_MAX, message=BOOKMARK_NOTE_TOO_LONG)
        if title is not None:
            title = _clean_text(title, limit=BOOKMARK_TITLE_MAX, message=BOOKMARK_TITLE_TOO_LONG)
    except _Invalid as exc:
        return BookmarkOutcome(False, str(exc), REFUSED_INVALID, bookmark)
    bookmark.note = note
    if title is not None:
        if not title and bookmark.kind == BookmarkKind.VIEW:
            title = bookmark_view_title(view_query=bookmark.view_query)
        bookmark.title = title
    bookmark.updated_at = timezone.now()
    updated = Bookmark.objects.filter(pk=bookmark.pk).update(
        note=bookmark.note, title=bookmark.title, updated_at=bookmark.updated_at
    )
    if not updated:
        return BookmarkOutcome(False, BOOKMARK_GONE, REFUSED_GONE)
    return BookmarkOutcome(True, BOOKMARK_SAVED, bookmark=bookmark)


def bookmark_delete(*, bookmark: Bookmark, user: Any, is_admin: bool | None = None) -> BookmarkOutcome:
    """Remove a bookmark (whoever added it or a workspace admin) and record it in the audit trail.

    When someone removed it first, the outcome says so and no second audit entry is written.
    """
    if not bookmark_may_change(bookmark=bookmark, user=user, is_admin=is_admin):
        return _not_allowed(bookmark)
    with transaction.atomic():
        deleted, _ = Bookmark.objects.filter(pk=bookmark.pk).delete()
        if deleted:
            _bookmark_audit(kind=EntryKind.BOOKMARK_REMOVED, bookmark=bookmark, user=user)
    if not deleted:
        return BookmarkOutcome(False, BOOKMARK_GONE, REFUSED_GONE)
    return BookmarkOutcome(True, BOOKMARK_REMOVED.format(label=bookmark), bookmark=bookmark)
