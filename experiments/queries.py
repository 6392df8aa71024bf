"""The experiments page's and the home page's query strings, parsed.

Every value falls back to its default when missing or unusable, so any address a person
pastes or bookmarks renders a page (never a 400 or 500); each query has one canonical form.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlencode

from django.http import QueryDict

from experiments.text import one_line

# --- Experiments list query -------------------------------------------------------

STATUS_TABS: tuple[tuple[str, str], ...] = (
    ("all", "All"),
    ("active", "Active"),
    ("draft", "Draft"),
    ("concluded", "Ended, not decided"),
    ("success", "Shipped a variant"),
    ("fail", "Shipped none"),
    # Not Mixpanel's statuses: what waits here (selectors.experiment_rows.WAITING_TABS), and
    # what is owed a decision (selectors.owed).
    ("owed", "Decisions owed"),
    ("awaiting", "Awaiting approval"),
    ("concluding", "Being concluded"),
)
# How the tabs are grouped on the page: Mixpanel's "success" and "fail" are decisions
# (a variant shipped, or none), not failed attempts, so they sit under "Decided".
STATUS_TAB_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("", ("all", "active", "draft", "concluded")),
    ("Decided", ("success", "fail")),
)
# The Waiting tabs, drawn apart: their counts come from our records, not from Mixpanel's list.
WAITING_TAB_GROUP: tuple[str, tuple[str, ...]] = ("Waiting", ("owed", "awaiting", "concluding"))
SORT_CHOICES: tuple[tuple[str, str], ...] = (
    ("-start", "Start date, newest first"),
    ("start", "Start date, oldest first"),
    ("name", "Name, A to Z"),
    ("-name", "Name, Z to A"),
    ("status", "Status"),
    ("-status", "Status, reversed"),
    ("-days", "Days running, most first"),
    ("days", "Days running, fewest first"),
    ("-exposures", "Exposures, most first"),
    ("exposures", "Exposures, fewest first"),
    ("-end", "End date, newest first"),
    ("end", "End date, oldest first"),
)
# The sortable column headers: (column, its heading, the direction a first click sorts).
SORT_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("name", "Name", ""),
    ("status", "Status", ""),
    ("start", "Start", "-"),
    ("days", "Days running", "-"),
    ("exposures", "Exposures", "-"),
)
DEFAULT_STATUS = "all"
DEFAULT_SORT = "-start"
PAGE_SIZES: tuple[int, ...] = (25, 50, 100)
PAGE_SIZE = 50
SEARCH_MAX_LENGTH = 200
_STATUSES = {value for value, _ in STATUS_TABS}
# How a saved view's filters are named on the Bookmarks page.
_PARAM_NAMES = {"status": "Status", "q": "Search", "sort": "Sort", "page": "Page", "size": "Per page"}
_SORTS = {value for value, _ in SORT_CHOICES}


def _whole_number(value: Any, *, default: int) -> int:
    try:
        return int(str(value or default).strip())
    except ValueError:
        return default


def search_text(value: Any) -> str:
    """A search box's text as every list searches it: spaces collapsed, cut at SEARCH_MAX_LENGTH."""
    return one_line(value)[:SEARCH_MAX_LENGTH]


@dataclass(frozen=True, slots=True)
class ExperimentListQuery:
    """What the experiments page shows, parsed from its URL.

    Every value falls back to its default when missing or unusable, so any URL a
    person pastes renders a page (never a 400 or 500). `querystring()` is the
    canonical form: defaults left out, fixed order, so a view has one URL.
    """

    status: str = DEFAULT_STATUS
    q: str = ""
    sort: str = DEFAULT_SORT
    page: int = 1
    size: int = PAGE_SIZE

    @classmethod
    def from_querydict(cls, data: QueryDict | dict[str, Any]) -> ExperimentListQuery:
        status = str(data.get("status") or "").strip().lower()
        sort = str(data.get("sort") or "").strip()
        q = search_text(data.get("q"))
        page = _whole_number(data.get("page"), default=1)
        size = _whole_number(data.get("size"), default=PAGE_SIZE)
        return cls(
            status=status if status in _STATUSES else DEFAULT_STATUS,
            q=q,
            sort=sort if sort in _SORTS else DEFAULT_SORT,
            # An absurd page number is clamped to the last page later, when the count is known.
            page=page if 1 <= page <= 1_000_000 else 1,
            size=size if size in PAGE_SIZES else PAGE_SIZE,
        )

    @classmethod
    def from_querystring(cls, text: str) -> ExperimentListQuery:
        return cls.from_querydict(QueryDict(text or ""))

    def with_(self, **changes: Any) -> ExperimentListQuery:
        """A copy with some values changed; a new filter or sort starts at page 1."""
        if "page" not in changes:
            changes["page"] = 1
        return replace(self, **changes)

    def params(self) -> list[tuple[str, str]]:
        pairs = []
        if self.status != DEFAULT_STATUS:
            pairs.append(("status", self.status))
        if self.q:
            pairs.append(("q", self.q))
        if self.sort != DEFAULT_SORT:
            pairs.append(("sort", self.sort))
        if self.size != PAGE_SIZE:
            pairs.append(("size", str(self.size)))
        if self.page != 1:
            pairs.append(("page", str(self.page)))
        return pairs

    def describe(self) -> list[tuple[str, str]]:
        """The view in words, one (name, value) pair per filter that differs from the default:
        [("Status", "Active"), ("Search", "checkout"), ("Sort", "Name, A to Z")]."""
        readable = {"status": dict(STATUS_TABS), "sort": dict(SORT_CHOICES)}
        return [
            (_PARAM_NAMES.get(key, key.replace("_", " ").capitalize()), readable.get(key, {}).get(value, value))
            for key, value in self.params()
        ]

    def querystring(self) -> str:
        """Canonical query string without the "?" ("" for the default view)."""
        return urlencode(self.params())

    def url_suffix(self) -> str:
        """ "?status=..." or "" — ready to append to the page's path."""
        text = self.querystring()
        return "?" + text if text else ""


# --- Home page query ---------------------------------------------------------------

MSG_HOME_WORKSPACE = "The address asks for a workspace that is not one of yours, so all your workspaces are shown."


@dataclass(frozen=True, slots=True)
class HomeQuery:
    """What the home page's list of active experiments shows, parsed from its URL.

    `workspace` is the primary key of one of the person's workspaces, or None for
    all of them; a value that is not one of theirs is dropped and `workspace_refused`
    set, so the page can say so rather than show nothing (or answer 404 for a shared
    address). `querystring()` is the canonical form.
    """

    workspace: int | None = None
    q: str = ""
    workspace_refused: bool = False

    @classmethod
    def from_querydict(cls, data: QueryDict | dict[str, Any], *, workspace_pks: set[int]) -> HomeQuery:
        raw = str(data.get("workspace") or "").strip()
        chosen = int(raw) if raw.isascii() and raw.isdigit() and len(raw) < 20 else None
        refused = bool(raw) and chosen not in workspace_pks
        return cls(workspace=None if refused else chosen, q=search_text(data.get("q")), workspace_refused=refused)

    def with_(self, **changes: Any) -> HomeQuery:
        """A copy with some values changed (and no refused workspace to report)."""
        return replace(self, workspace_refused=False, **changes)

    def querystring(self) -> str:
        """Canonical query string without the "?" ("" for every workspace and no search)."""
        pairs = []
        if self.workspace is not None:
            pairs.append(("workspace", str(self.workspace)))
        if self.q:
            pairs.append(("q", self.q))
        return urlencode(pairs)

    def url_suffix(self) -> str:
        text = self.querystring()
        return "?" + text if text else ""
