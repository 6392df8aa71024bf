"""Audit review: the list of conclusion attempts, one attempt, and exports.

Read-only screens. Who sees what is decided in selectors (members: their
workspaces; the review-all permission: everything); every screen is a GET.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from django import forms
from django.core.validators import MaxValueValidator, MinValueValidator
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest, StreamingHttpResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET
from django_htmx.http import push_url

from experiments.converters import DB_ID_MAX
from experiments.models import AttemptAction, AttemptState, Workspace
from experiments.selectors import audit as audit_selectors
from experiments.selectors import audit_controls as control_selectors
from experiments.selectors import workspaces as workspace_selectors
from experiments.selectors.audit import AUDIT_EXPORT_FIELDS, AUDIT_PAGE_SIZE, AUDIT_PAGE_SIZES, AuditFilters
from experiments.selectors.audit_controls import CONTROL_EXPORT_FIELDS, CONTROLS, CONTROLS_LABEL, PLANS, PLANS_LABEL
from experiments.views.helpers import get_workspace_access

SEARCH_MAX_LENGTH = 200
# Export column headers, in the order of AUDIT_EXPORT_FIELDS (the selector's tuples).
EXPORT_HEADERS = {
    "id": "attempt_id",
    "action": "action",
    "created_at": "created_at",
    "workspace_id": "workspace_id",
    "workspace__name": "workspace",
    "actor_id": "actor_id",
    "actor_name": "actor_name",
    "experiment_id": "experiment_id",
    "experiment_name": "experiment_name",
    "reason_category": "reason_category",
    "reason_text": "reason_text",
    "end_date": "end_date_sent",
    "request_body": "request_body",
    "state": "outcome",
    "failure_reason": "failure_reason",
    "http_status": "http_status",
    "duration_ms": "duration_ms",
    "finished_at": "finished_at",
    "expires_at": "approval_expires_at",
    "reviewer_id": "reviewer_id",
    "reviewer_name": "reviewer_name",
    "review_note": "review_note",
    "reviewed_at": "reviewed_at",
    "seq": "seq",
    "hash": "hash",
}
# The controls view's export: one row per governance entry (settings changes).
CONTROL_EXPORT_HEADERS = {
    "seq": "seq",
    "kind": "kind",
    "created_at": "created_at",
    "workspace_id": "workspace_id",
    "workspace__name": "workspace",
    "actor_id": "actor_id",
    "actor_name": "actor_name",
    "changes": "changes",
    "payload": "payload",
    "hash": "hash",
}
# Every text column (all but the numbers: ids, HTTP status, duration) is neutralised,
# dates and JSON included, though those start with a digit or "{".
_NUMBER_COLUMNS = ("id", "workspace_id", "actor_id", "http_status", "duration_ms", "reviewer_id", "seq")


@dataclass(frozen=True)
class _ExportShape:
    """An export's columns: their headers, the one that is JSON text, and the text ones to neutralise."""

    headers: list[str]
    json_column: int
    text_columns: list[int]

    @classmethod
    def of(cls, fields: tuple[str, ...], headers: dict[str, str], json_field: str) -> _ExportShape:
        text = [i for i, name in enumerate(fields) if name not in _NUMBER_COLUMNS]
        return cls([headers[name] for name in fields], fields.index(json_field), text)


ATTEMPT_EXPORT = _ExportShape.of(AUDIT_EXPORT_FIELDS, EXPORT_HEADERS, "request_body")
CONTROL_EXPORT = _ExportShape.of(CONTROL_EXPORT_FIELDS, CONTROL_EXPORT_HEADERS, "payload")
EXPORT_CONTENT_TYPES = {"csv": "text/csv; charset=utf-8", "ndjson": "application/x-ndjson; charset=utf-8"}
# Spreadsheets run a cell that starts with one of these as a formula (OWASP "CSV
# injection"); fullwidth forms too in some versions. Some skip leading whitespace
# first, and a tab, carriage return or line feed can start a formula on import. A
# leading ' makes the cell text.
FORMULA_CHARS = ("=", "+", "-", "@", "\uff1d", "\uff0b", "\uff0d", "\uff20")
LINE_BREAKS_AND_TABS = ("\t", "\r", "\n")
# Every cell neutralise_cell changes starts with one of these or with whitespace: the
# export's loop looks no further at any other cell (it runs a million times).
_RISKY_FIRST = frozenset("".join(FORMULA_CHARS + LINE_BREAKS_AND_TABS))
# Rows per chunk written to the socket: fewer, larger writes keep a big export fast.
EXPORT_BATCH_ROWS = 500


# The date filters become datetimes a day or two either side (see the selector's range
# filter); dates near the calendar's ends would overflow, and no attempt is dated there.
AUDIT_DATE_MIN = dt.date(1900, 1, 1)
AUDIT_DATE_MAX = dt.date(2999, 12, 31)
MSG_DATE_RANGE = "Enter a date between 1900-01-01 and 2999-12-31."
MSG_WORKSPACE = "Choose a workspace."
MSG_PERSON_ID = "No one has that user id."


def _date_filter(label: str) -> forms.DateField:
    return forms.DateField(
        required=False,
        validators=[
            MinValueValidator(AUDIT_DATE_MIN, message=MSG_DATE_RANGE),
            MaxValueValidator(AUDIT_DATE_MAX, message=MSG_DATE_RANGE),
        ],
        error_messages={"invalid": f"Enter the {label} date as YYYY-MM-DD."},
    )


class AuditFilterForm(forms.Form):
    """The audit list's filters, read from the URL. Invalid values are reported and ignored."""

    workspace = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=DB_ID_MAX,
        error_messages={"invalid": MSG_WORKSPACE, "min_value": MSG_WORKSPACE, "max_value": MSG_WORKSPACE},
    )
    person = forms.CharField(required=False, max_length=150)
    action = forms.ChoiceField(
        required=False,
        choices=[("", "Any action"), *AttemptAction.choices, (CONTROLS, CONTROLS_LABEL), (PLANS, PLANS_LABEL)],
        error_messages={"invalid_choice": "Choose one of the listed actions."},
    )
    outcome = forms.ChoiceField(
        required=False,
        choices=[("", "Any outcome"), *AttemptState.choices],
        error_messages={"invalid_choice": "Choose one of the listed outcomes."},
    )
    date_from = _date_filter("From")
    date_to = _date_filter("To")
    q = forms.CharField(required=False, max_length=SEARCH_MAX_LENGTH)
    size = forms.TypedChoiceField(
        required=False, coerce=int, empty_value=AUDIT_PAGE_SIZE, choices=[(str(n), str(n)) for n in AUDIT_PAGE_SIZES]
    )

    def clean_person(self) -> str:
        person = " ".join(self.cleaned_data["person"].split())
        # Digits are a user id (the selector's rule); one past the database's range is no one.
        if person.isascii() and person.isdigit() and int(person) > DB_ID_MAX:
            raise forms.ValidationError(MSG_PERSON_ID)
        return person

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        start, end = data.get("date_from"), data.get("date_to")
        if start and end and start > end:
            self.add_error("date_to", "The To date is before the From date.")
        return data

    def filters(self, *, workspace: Workspace | None = None) -> AuditFilters:
        """The valid part of the filter; `workspace` pins it (a workspace's own audit page)."""
        self.is_valid()
        data = self.cleaned_data
        return AuditFilters(
            workspace_id=workspace.pk if workspace else data.get("workspace"),
            person=data.get("person") or "",
            action=data.get("action") or "",
            outcome=data.get("outcome") or "",
            date_from=data.get("date_from"),
            date_to=data.get("date_to"),
            q=" ".join((data.get("q") or "").split()),
        )

    @property
    def page_size(self) -> int:
        return self.cleaned_data.get("size") or AUDIT_PAGE_SIZE


def _audit_workspace(request: HttpRequest, workspace_pk: int) -> Workspace:
    """A workspace whose audit the user may read; 404 for everyone else."""
    if audit_selectors.audit_can_review_all(user=request.user):
        return get_object_or_404(Workspace, pk=workspace_pk)
    return get_workspace_access(request, workspace_pk).workspace


def _may_open(request: HttpRequest, workspace: Workspace) -> bool:
    """Whether the workspace's own pages (its experiments) open for this user.

    A reviewer of all workspaces reads every audit trail without being a member; for
    them the audit screens name a workspace they cannot open in plain text, rather
    than link to a 404. Everyone else only sees the audit of their own workspaces.
    """
    if not audit_selectors.audit_can_review_all(user=request.user):
        return True
    return workspace_selectors.workspace_access(user=request.user, workspace_pk=workspace.pk) is not None


def _render_list(request: HttpRequest, *, workspaces: list[Workspace], pinned: Workspace | None) -> HttpResponse:
    form = AuditFilterForm(request.GET)
    filters = form.filters(workspace=pinned)
    cursor = request.GET.get("cursor") if audit_selectors.parse_audit_cursor(request.GET.get("cursor")) else None
    controls = filters.action in (CONTROLS, PLANS)
    page_of = control_selectors.audit_control_page if controls else audit_selectors.audit_attempt_page
    page = page_of(user=request.user, filters=filters, cursor=cursor, page_size=form.page_size)
    list_url = (
        reverse("experiments:audit-workspace-list", args=[pinned.pk]) if pinned else reverse("experiments:audit-list")
    )
    # The pinned workspace is in the path, not the query string, of its own page.
    params = [(k, v) for k, v in filters.params() if not (pinned and k == "workspace")]
    if form.page_size != AUDIT_PAGE_SIZE:
        params.append(("size", str(form.page_size)))
    query = urlencode(params)

    def page_url(cursor: str | None) -> str:
        return f"{list_url}?{urlencode([*params, ('cursor', cursor)])}" if cursor else ""

    export_query = urlencode(filters.params())
    context = {
        "form": form,
        "filters": filters,
        "page": page,
        "workspaces": workspaces,
        "pinned": pinned,
        "list_url": list_url,
        "first_url": f"{list_url}?{query}" if query else list_url,
        "newer_url": page_url(page.newer_cursor),
        "older_url": page_url(page.older_cursor),
        "csv_url": reverse("experiments:audit-export", args=["csv"]) + ("?" + export_query if export_query else ""),
        "ndjson_url": reverse("experiments:audit-export", args=["ndjson"])
        + ("?" + export_query if export_query else ""),
        "approximate_total": f"{page.approximate_total:,}" if page.approximate_total else "",
        "outcome_choices": AttemptState.choices,
        "action_choices": [*AttemptAction.choices, (CONTROLS, CONTROLS_LABEL), (PLANS, PLANS_LABEL)],
        "controls": controls,
        "plans": filters.action == PLANS,
        "controls_label": CONTROLS_LABEL,
        "plans_label": PLANS_LABEL,
        "page_sizes": AUDIT_PAGE_SIZES,
        "may_open": pinned is not None and _may_open(request, pinned),
    }
    partial = request.htmx and not request.htmx.history_restore_request
    template = "experiments/audit_list.html#results" if partial else "experiments/audit_list.html"
    response = render(request, template, context)
    if partial:
        # The form sends every field, empty ones too: the address bar gets the canonical URL.
        push_url(response, page_url(cursor) or context["first_url"])
    return response


@require_GET
def audit_list(request: HttpRequest) -> HttpResponse:
    """Every conclusion attempt the user may review, newest first, filtered and keyset-paged."""
    return _render_list(request, workspaces=audit_selectors.audit_workspaces_for_user(user=request.user), pinned=None)


@require_GET
def audit_workspace_list(request: HttpRequest, workspace_pk: int) -> HttpResponse:
    """One workspace's attempts: for its members and for reviewers of all workspaces."""
    workspace = _audit_workspace(request, workspace_pk)
    return _render_list(request, workspaces=[workspace], pinned=workspace)


@require_GET
def audit_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """One attempt: its entries, what was sent, what Mixpanel returned."""
    detail = audit_selectors.audit_attempt_detail(user=request.user, pk=pk)
    if detail is None:
        raise Http404("No such conclusion attempt.")
    context = {"detail": detail, "attempt": detail.attempt, "may_open": _may_open(request, detail.attempt.workspace)}
    return render(request, "experiments/audit_detail.html", context)


@require_GET
def audit_export(request: HttpRequest, fmt: str) -> HttpResponse:
    """The current filter's attempts as CSV or NDJSON, streamed in constant memory.

    A large export takes a while: run threaded workers (gunicorn --threads) or a
    worker timeout long enough, so it does not block or get killed.
    """
    if fmt not in EXPORT_CONTENT_TYPES:
        raise Http404("Export as csv or ndjson.")
    form = AuditFilterForm(request.GET)
    if not form.is_valid():
        problems = "; ".join(str(e) for errors in form.errors.values() for e in errors)
        return HttpResponseBadRequest(f"The export's filter is not valid: {problems}", content_type="text/plain")
    filters = form.filters()
    if filters.action in (CONTROLS, PLANS):
        rows = control_selectors.audit_control_export_rows(user=request.user, filters=filters)
        shape, name = CONTROL_EXPORT, "settings-audit" if filters.action == CONTROLS else "plans-audit"
    else:
        rows = audit_selectors.audit_export_rows(user=request.user, filters=filters)
        shape, name = ATTEMPT_EXPORT, "conclusion-audit"
    body = _csv_stream(rows, shape) if fmt == "csv" else _ndjson_stream(rows, shape)
    response = StreamingHttpResponse(body, content_type=EXPORT_CONTENT_TYPES[fmt])
    stamp = timezone.now().astimezone(dt.UTC).strftime("%Y%m%d-%H%M%S")
    response["Content-Disposition"] = f'attachment; filename="{name}-{stamp}.{fmt}"'
    return response


# Export encoding -------------------------------------------------------------------------


class _Echo:
    """A file-like object whose write() returns the line, for csv.writer in a generator."""

    def write(self, value: str) -> str:
        return value


def neutralise_cell(value: str) -> str:
    """Make a text cell inert in spreadsheets (formula injection), whitespace before it included."""
    if value.startswith(LINE_BREAKS_AND_TABS) or value.lstrip().startswith(FORMULA_CHARS):
        return "'" + value
    return value


def _batched(lines: Iterable[str]) -> Iterator[str]:
    batch: list[str] = []
    for line in lines:
        batch.append(line)
        if len(batch) >= EXPORT_BATCH_ROWS:
            yield "".join(batch)
            batch.clear()
    if batch:
        yield "".join(batch)


def _csv_stream(rows: Iterable[tuple[Any, ...]], shape: _ExportShape) -> Iterator[str]:
    """CSV lines; per row only the columns that need it are touched (this runs a million times)."""
    writer = csv.writer(_Echo())
    text_columns = shape.text_columns

    def line(row: tuple[Any, ...]) -> str:
        cells = list(row)
        for i in text_columns:
            text = cells[i]
            if text and (text[0] in _RISKY_FIRST or text[0].isspace()):
                cells[i] = neutralise_cell(text)
        return writer.writerow(cells)  # None is written as an empty cell

    yield writer.writerow(shape.headers)
    yield from _batched(line(row) for row in rows)


def _ndjson_stream(rows: Iterable[tuple[Any, ...]], shape: _ExportShape) -> Iterator[str]:
    """One JSON object per line; the JSON column (request_body, payload) is spliced in as the
    JSON text it already is."""
    json_column = shape.json_column
    headers = [h for i, h in enumerate(shape.headers) if i != json_column]
    body_key = json.dumps(shape.headers[json_column])

    def line(row: tuple[Any, ...]) -> str:
        cells = list(row)
        body = cells.pop(json_column) or "null"
        head = json.dumps(dict(zip(headers, cells, strict=True)), ensure_ascii=False)
        return f"{head[:-1]}, {body_key}: {body}}}\n"

    yield from _batched(line(row) for row in rows)
