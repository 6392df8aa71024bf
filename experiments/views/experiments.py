"""The experiments page of a workspace and the experiment page.

Views stay thin: access check, query, one selector call, render. htmx requests get the
template's inline partial; the same URL without htmx gets the whole page.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any
from urllib.parse import urlencode

from django.contrib import messages
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import push_url

from experiments.forms import ScheduleForm
from experiments.mixpanel import shapes
from experiments.queries import PAGE_SIZES, SEARCH_MAX_LENGTH, SORT_CHOICES, SORT_COLUMNS, ExperimentListQuery
from experiments.selectors import bookmarks as bookmark_selectors
from experiments.selectors import experiment_list as list_selectors
from experiments.selectors import experiment_page as page_selectors
from experiments.selectors import experiment_rows as row_selectors
from experiments.selectors import plans as plan_selectors
from experiments.selectors import schedules as schedule_selectors
from experiments.selectors.workspaces import WorkspaceAccess
from experiments.services import plans as plan_services
from experiments.views.helpers import (
    DETAIL_TEMPLATE,
    LIST_TEMPLATE,
    HtmxHttpRequest,
    conclude_section_context,
    experiment_list_url,
    get_workspace_access,
    tab_groups,
    waiting_tabs,
    wants_fragment,
)

# Opaque upstream JSON is shown, not stored: past this many characters the rest is cut.
JSON_DISPLAY_LIMIT = 200_000
MSG_REFRESHED = "The experiment list was read again from Mixpanel."


def _age_text(fetched_at: dt.datetime | None, now: dt.datetime) -> str:
    if fetched_at is None:
        return ""
    seconds = max(0, int((now - fetched_at).total_seconds()))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h"


# --- Experiments page --------------------------------------------------------------------


def _sort_headers(query: ExperimentListQuery, list_url: str) -> dict[str, dict[str, str]]:
    """Per sortable column: the URL a click goes to and its aria-sort value."""
    headers = {}
    for column, label, first in SORT_COLUMNS:
        if query.sort.lstrip("-") == column:
            descending = query.sort.startswith("-")
            state, next_sort = ("descending", column) if descending else ("ascending", "-" + column)
        else:
            state, next_sort = "none", first + column
        headers[column] = {"label": label, "state": state, "url": list_url + query.with_(sort=next_sort).url_suffix()}
    return headers


def _page_links(query: ExperimentListQuery, page: Any, list_url: str) -> list[dict[str, Any]]:
    """Page numbers: the first, the last, and two either side of the current one; None marks a gap."""
    wanted = {1, page.num_pages, *range(page.page - 2, page.page + 3)}
    links: list[dict[str, Any]] = []
    previous = 0
    for number in sorted(n for n in wanted if 1 <= n <= page.num_pages):
        if number > previous + 1:
            links.append({"gap": True})
        links.append(
            {"number": number, "url": list_url + query.with_(page=number).url_suffix(), "current": number == page.page}
        )
        previous = number
    return links


def _render_list(
    request: HtmxHttpRequest, access: WorkspaceAccess, query: ExperimentListQuery, snapshot: Any
) -> HttpResponse:
    listed = row_selectors.experiment_list_rows(
        access=access,
        snapshot=snapshot,
        status=query.status,
        q=query.q,
        sort=query.sort,
        page=query.page,
        size=query.size,
    )
    page = listed.page
    query = query.with_(page=page.page)  # a page past the end was clamped to the last one
    list_url = experiment_list_url(access.workspace.pk)
    now = timezone.now()
    strip = bookmark_selectors.bookmark_strip(access=access, snapshot=snapshot)
    context = {
        "access": access,
        "workspace": access.workspace,
        "query": query,
        "snapshot": snapshot,
        "page": page,
        "rows": listed.rows,
        "waiting_tabs": waiting_tabs(query, listed.waiting_counts, list_url) if listed.waiting_tabs else None,
        "bookmark_strip": strip,
        "starred": strip.starred,
        "list_url": list_url,
        "canonical_url": list_url + query.url_suffix(),
        "tab_groups": tab_groups(query, page, list_url, counts_known=snapshot.available),
        "sort_headers": _sort_headers(query, list_url),
        "page_links": _page_links(query, page, list_url),
        "sort_choices": SORT_CHOICES,
        "sort_label": dict(SORT_CHOICES)[query.sort].lower(),
        "page_sizes": PAGE_SIZES,
        "search_max_length": SEARCH_MAX_LENGTH,
        "previous_url": list_url + query.with_(page=page.page - 1).url_suffix() if page.has_previous else "",
        "next_url": list_url + query.with_(page=page.page + 1).url_suffix() if page.has_next else "",
        "clear_search_url": list_url + query.with_(q="").url_suffix(),
        "all_tabs_url": list_url + query.with_(status="all").url_suffix(),
        "age_text": _age_text(snapshot.fetched_at, now),
        "conclude_suffix": "?" + urlencode({"back": "list", "list_query": query.querystring()}),
        "back": "list",
    }
    if wants_fragment(request):
        response = render(request, LIST_TEMPLATE + "#results", context)
        # The address bar shows the canonical form of what is on screen.
        push_url(response, context["canonical_url"])
    else:
        response = render(request, LIST_TEMPLATE, context)
    return response


@require_GET
def experiment_list(request: HtmxHttpRequest, workspace_pk: int) -> HttpResponse:
    """The workspace's home: its experiments, filtered, searched, sorted and paged by URL."""
    access = get_workspace_access(request, workspace_pk)
    query = ExperimentListQuery.from_querydict(request.GET)
    snapshot = list_selectors.experiment_list_cached(workspace=access.workspace)
    return _render_list(request, access, query, snapshot)


@require_POST
def experiment_list_refresh(request: HtmxHttpRequest, workspace_pk: int) -> HttpResponse:
    """Read the list from Mixpanel again, then show the same view."""
    access = get_workspace_access(request, workspace_pk)
    query = ExperimentListQuery.from_querystring(request.POST.get("list_query", ""))
    snapshot = list_selectors.experiment_list_cached(workspace=access.workspace, refresh=True)
    if wants_fragment(request):
        return _render_list(request, access, query, snapshot)
    if snapshot.error:
        messages.error(request, snapshot.error)
    else:
        messages.success(request, MSG_REFRESHED)
    return redirect(experiment_list_url(access.workspace.pk) + query.url_suffix())


# --- Experiment page --------------------------------------------------------------------


def _pretty_json(value: Any) -> str:
    """Opaque upstream JSON as indented text (rendered escaped, in <pre>)."""
    try:
        text = json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    if len(text) > JSON_DISPLAY_LIMIT:
        text = text[:JSON_DISPLAY_LIMIT] + "\n… (cut: too long to show here)"
    return text


def _schedule_context(access: WorkspaceAccess, experiment: Any, user: Any) -> dict[str, Any]:
    """The page's scheduled conclusion: the waiting one, whether this person may cancel it, and
    the form to set one (its time suggested at the planned end, when that is still ahead)."""
    schedule = schedule_selectors.live_schedule(workspace=access.workspace, experiment_id=experiment.id)
    can_cancel = schedule is not None and (schedule.author_id == user.pk or access.is_admin)
    planned = shapes.planned_finish(experiment.settings, experiment.start_date)
    suggested = planned if planned is not None and planned > timezone.now() else None
    can_schedule = access.can_conclude and schedule is None and not experiment.is_concluded
    return {
        "schedule": schedule,
        "can_cancel_schedule": can_cancel,
        "schedule_form": ScheduleForm(suggested=suggested) if can_schedule else None,
        "schedule_suggested_planned_end": suggested is not None,
    }


def _detail_context(
    access: WorkspaceAccess, read: page_selectors.ExperimentRead, user: Any, plan: Any
) -> dict[str, Any]:
    experiment = read.experiment
    return {
        "plan": plan,
        **_schedule_context(access, experiment, user),
        "access": access,
        "workspace": access.workspace,
        "experiment": experiment,
        "read": read,
        "list_url": experiment_list_url(access.workspace.pk),
        "overview": page_selectors.experiment_overview(workspace=access.workspace, experiment=experiment),
        "opaque": [
            ("Variants", _pretty_json(experiment.variants)),
            ("Metrics", _pretty_json(experiment.metrics)),
            ("Settings", _pretty_json(experiment.settings)),
            ("Exposures cache", _pretty_json(experiment.exposures_cache)),
            ("Results cache", _pretty_json(experiment.results_cache)),
            ("Feature flag", _pretty_json(experiment.feature_flag)),
        ],
        "raw_json": _pretty_json(dict(experiment.raw)),
        "starred": bookmark_selectors.bookmark_ids_for_experiments(
            workspace=access.workspace, experiment_ids=[experiment.id]
        ),
        **conclude_section_context(access, experiment),
    }


@require_GET
def experiment_detail(request: HtmxHttpRequest, workspace_pk: int, experiment_id: str) -> HttpResponse:
    """One experiment, read from Mixpanel: what a person deciding needs, and every conclusion attempt."""
    access = get_workspace_access(request, workspace_pk)
    try:
        read = page_selectors.experiment_read(workspace=access.workspace, experiment_id=experiment_id)
    except page_selectors.ExperimentNotFound as exc:
        raise Http404(str(exc)) from None
    if read.experiment is None:
        context = {"access": access, "workspace": access.workspace, "unavailable": read.error}
        context.update(
            list_url=experiment_list_url(access.workspace.pk), experiment_id=experiment_id, retry_url=request.path
        )
        return render(request, DETAIL_TEMPLATE, context, status=503)
    # The page reads the whole experiment: the first sight of it active seals its plan.
    sealed = plan_services.plan_observe(workspace=access.workspace, experiment=read.experiment)
    plan = plan_selectors.plan_status_of(sealed=sealed)
    return render(request, DETAIL_TEMPLATE, _detail_context(access, read, request.user, plan))


# --- Force conclude --------------------------------------------------------------------
