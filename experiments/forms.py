"""Forms: the experiments page's and the home page's query strings, the force-conclude and decision dialogs,
and workspace settings."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlencode

from django import forms
from django.http import QueryDict
from django.utils import timezone

from experiments import dates
from experiments.mixpanel.experiment import Experiment
from experiments.models import ReasonCategory
from experiments.notifications import webhook as notifications
from experiments.notifications.webhook import MSG_URL_INVALID
from experiments.services.decisions import NOTE_MAX_LENGTH

# --- Experiments list query -------------------------------------------------------

STATUS_TABS: tuple[tuple[str, str], ...] = (
    ("all", "All"),
    ("active", "Active"),
    ("draft", "Draft"),
    ("concluded", "Ended, not decided"),
    ("success", "Shipped a variant"),
    ("fail", "Shipped none"),
)
# How the tabs are grouped on the page: Mixpanel's "success" and "fail" are decisions
# (a variant shipped, or none), not failed attempts, so they sit under "Decided".
STATUS_TAB_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("", ("all", "active", "draft", "concluded")),
    ("Decided", ("success", "fail")),
)
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
    return " ".join(str(value or "").split())[:SEARCH_MAX_LENGTH]


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


# --- Force conclude ---------------------------------------------------------------

REASON_TEXT_MAX_LENGTH = 1000
# What the end-time field shows and takes: UTC, 24-hour, minutes ("2026-11-26 09:30").
# A text field rather than datetime-local, which browsers draw in the reader's own
# 12- or 24-hour style although the value is UTC.
END_DATE_INPUT_FORMAT = "%Y-%m-%d %H:%M"
MSG_END_DATE_FORMAT = "Enter a date and time like 2026-11-26 09:30 (UTC, 24-hour)."


def datetime_local_value(value: dt.datetime) -> str:
    """A UTC datetime as the end-time field's value: "2026-11-26 09:30"."""
    return value.astimezone(dt.UTC).strftime(END_DATE_INPUT_FORMAT)


class UTCDateTimeField(forms.DateTimeField):
    """A typed date and time read as UTC, whatever timezone is active.

    The label says "UTC", so the wall-clock value a person types is UTC; "T" or a
    space between date and time both do; an explicit offset (from a script or a
    test) is honoured and converted.
    """

    def to_python(self, value: Any) -> dt.datetime | None:
        if value in self.empty_values:
            return None
        if isinstance(value, dt.datetime):
            return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        try:
            return dates.parse_iso_datetime(str(value))
        except ValueError:
            raise forms.ValidationError(MSG_END_DATE_FORMAT, code="invalid") from None


class ForceConcludeForm(forms.Form):
    """The confirmation dialog: why, and when the analysis window ends.

    `experiment` (the list's copy) supplies the start date the end may not precede.
    `back` says where the person came from, so the answer lands in the same place.
    """

    reason_category = forms.ChoiceField(
        label="Reason",
        choices=[("", "Choose a reason…"), *ReasonCategory.choices],
        error_messages={"required": "Choose a reason.", "invalid_choice": "Choose one of the listed reasons."},
    )
    reason_text = forms.CharField(
        label="In your own words",
        max_length=REASON_TEXT_MAX_LENGTH,
        strip=True,
        widget=forms.Textarea(attrs={"rows": 3}),
        error_messages={
            "required": "Say briefly why you are concluding it; the audit trail keeps this.",
            "max_length": f"Keep it under {REASON_TEXT_MAX_LENGTH} characters.",
        },
    )
    end_date = UTCDateTimeField(
        label="End of the analysis window (UTC)",
        error_messages={"required": "Give the end date and time (UTC)."},
    )
    back = forms.ChoiceField(choices=[("list", "list"), ("detail", "detail")], required=False)
    # The experiments page's query string, to return to the same view without JavaScript.
    list_query = forms.CharField(required=False, max_length=1000)

    def __init__(self, *args: Any, experiment: Experiment | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.experiment = experiment
        if not self.is_bound:
            self.initial.setdefault("end_date", datetime_local_value(timezone.now()))

    def clean_end_date(self) -> dt.datetime:
        end_date: dt.datetime = self.cleaned_data["end_date"]
        start = self.experiment.start_date if self.experiment else None
        problem = dates.end_date_problem(end_date, start=start, now=timezone.now())
        if problem:
            raise forms.ValidationError(problem, code="end_date")
        return end_date

    def clean_back(self) -> str:
        return self.cleaned_data.get("back") or "list"

    def clean_list_query(self) -> str:
        # Re-encoded from parsed values: never echoes anything but our own parameters.
        return ExperimentListQuery.from_querystring(self.cleaned_data.get("list_query") or "").querystring()


SHIP_NONE = "none"


class DecisionForm(forms.Form):
    """The decision dialog: which variant to ship (or none), and a required note.

    `variant_keys` are the experiment's variants as the page lists them; the choice
    values are "variant:<key>" or "none", so no key can pass for "ship none".
    """

    decision = forms.ChoiceField(
        label="Decision",
        widget=forms.RadioSelect,
        error_messages={
            "required": "Choose a variant to ship, or ship none.",
            "invalid_choice": "Choose one of the listed options.",
        },
    )
    note = forms.CharField(
        label="Note (sent to Mixpanel with the decision)",
        max_length=NOTE_MAX_LENGTH,
        strip=True,
        widget=forms.Textarea(attrs={"rows": 3}),
        error_messages={
            "required": "Write a note saying why; it is sent to Mixpanel and kept in the audit trail.",
            "max_length": f"Keep it under {NOTE_MAX_LENGTH} characters.",
        },
    )

    def __init__(self, *args: Any, variant_keys: tuple[str, ...] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        choices = [(f"variant:{key}", f"Ship variant {key}") for key in variant_keys]
        self.fields["decision"].choices = [*choices, (SHIP_NONE, "Ship none")]

    def variant(self) -> str | None:
        """The key of the variant to ship, or None for "ship none" (after is_valid())."""
        value = self.cleaned_data["decision"]
        return None if value == SHIP_NONE else value.removeprefix("variant:")


# --- Workspace settings -------------------------------------------------------------

APPROVAL_WINDOW_MIN_HOURS = 1
APPROVAL_WINDOW_MAX_HOURS = 168
MSG_WINDOW = (
    f"Give the approval window in whole hours, from {APPROVAL_WINDOW_MIN_HOURS} to {APPROVAL_WINDOW_MAX_HOURS}."
)
MSG_SET_AND_REMOVE = "Either paste a new webhook address or remove the webhook, not both."


class WorkspaceSettingsForm(forms.Form):
    """A workspace's notification and approval settings (its admins' settings page).

    The webhook address is write-only: blank keeps the current one, and a typed one is
    never drawn back into the page, not even next to its error.
    """

    webhook_url = forms.CharField(
        label="Webhook address",
        required=False,
        strip=True,
        max_length=notifications.WEBHOOK_URL_MAX_LENGTH,
        error_messages={"max_length": notifications.MSG_URL_TOO_LONG, "null_characters_not_allowed": MSG_URL_INVALID},
    )
    remove_webhook = forms.BooleanField(label="Remove the webhook", required=False)
    email_bookmarkers = forms.BooleanField(label="Email", required=False)
    requires_approval = forms.BooleanField(label="Require two-person approval", required=False)
    approval_window_hours = forms.IntegerField(
        label="Approval window (hours)",
        min_value=APPROVAL_WINDOW_MIN_HOURS,
        max_value=APPROVAL_WINDOW_MAX_HOURS,
        error_messages={
            "required": MSG_WINDOW,
            "invalid": MSG_WINDOW,
            "min_value": MSG_WINDOW,
            "max_value": MSG_WINDOW,
        },
    )

    def clean_webhook_url(self) -> str:
        url: str = self.cleaned_data["webhook_url"]
        problem = notifications.webhook_url_problem(url) if url else None
        if problem:
            raise forms.ValidationError(problem, code="webhook_url")
        return url

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if cleaned.get("webhook_url") and cleaned.get("remove_webhook"):
            raise forms.ValidationError(MSG_SET_AND_REMOVE, code="set_and_remove")
        return cleaned
