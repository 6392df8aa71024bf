"""The experiments page, the experiment page, and the Force conclude button.

Views stay thin: access check, query or form, one selector or service call, render.
htmx requests get the template's inline partial; the same URL without htmx gets the
whole page. Expected failures answer 200 with a readable fragment (htmx 2 does not
swap 4xx/5xx); without JavaScript, POSTs redirect with a message.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import Any
from urllib.parse import urlencode

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import push_url, reswap, retarget, trigger_client_event
from django_htmx.middleware import HtmxDetails

from experiments import observability
from experiments.forms import (
    PAGE_SIZES,
    SEARCH_MAX_LENGTH,
    SORT_CHOICES,
    SORT_COLUMNS,
    STATUS_TAB_GROUPS,
    STATUS_TABS,
    DecisionForm,
    ExperimentListQuery,
    ForceConcludeForm,
)
from experiments.mixpanel import client as mixpanel
from experiments.mixpanel.experiment import Experiment
from experiments.models import AttemptAction, AttemptState
from experiments.selectors import bookmarks as bookmark_selectors
from experiments.selectors import conclusions as conclusion_selectors
from experiments.selectors import experiment_list as list_selectors
from experiments.selectors import experiment_page as page_selectors
from experiments.selectors.workspaces import WorkspaceAccess
from experiments.services import conclusions as conclusion_services
from experiments.services import decisions as decision_services
from experiments.views.access import get_workspace_access

LIST_TEMPLATE = "experiments/experiment_list.html"
DETAIL_TEMPLATE = "experiments/experiment_detail.html"
CONCLUDE_TEMPLATE = "experiments/force_conclude.html"
DECIDE_TEMPLATE = "experiments/decide.html"
# Opaque upstream JSON is shown, not stored: past this many characters the rest is cut.
JSON_DISPLAY_LIMIT = 200_000
MSG_FORBIDDEN = (
    "Only concluders and admins of {workspace} can end the analysis of an experiment. You are a {role} here; "
    "ask a workspace admin if you need to."
)
MSG_DECIDE_FORBIDDEN = (
    "Only concluders and admins of {workspace} can record decisions on experiments. You are a {role} here; "
    "ask a workspace admin if you need to."
)
MSG_REFRESHED = "The experiment list was read again from Mixpanel."
MSG_NO_SUCH_EXPERIMENT = "This workspace has no such experiment."


class HtmxHttpRequest(HttpRequest):
    htmx: HtmxDetails


def _wants_fragment(request: HtmxHttpRequest) -> bool:
    # A history-restore request (back button after a cache miss) needs the whole page.
    return bool(request.htmx) and not request.htmx.history_restore_request


def _age_text(fetched_at: dt.datetime | None, now: dt.datetime) -> str:
    if fetched_at is None:
        return ""
    seconds = max(0, int((now - fetched_at).total_seconds()))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h"


def _list_url(workspace_pk: int) -> str:
    return reverse("experiments:experiment-list", args=[workspace_pk])


# --- Experiments page --------------------------------------------------------------------


def _tab_groups(query: ExperimentListQuery, page: Any, list_url: str, counts_known: bool) -> list[dict[str, Any]]:
    labels = dict(STATUS_TABS)
    return [
        {
            "label": group_label,
            "tabs": [
                {
                    "label": labels[value],
                    # With no copy of the list at all, a count of 0 would be a lie.
                    "count": page.counts.get(value, 0) if counts_known else None,
                    "url": list_url + query.with_(status=value).url_suffix(),
                    "current": value == query.status,
                }
                for value in values
            ],
        }
        for group_label, values in STATUS_TAB_GROUPS
    ]


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
    page = list_selectors.experiment_list_page(
        snapshot=snapshot, status=query.status, q=query.q, sort=query.sort, page=query.page, page_size=query.size
    )
    query = query.with_(page=page.page)  # a page past the end was clamped to the last one
    list_url = _list_url(access.workspace.pk)
    now = timezone.now()
    strip = bookmark_selectors.bookmark_strip(access=access, snapshot=snapshot)
    context = {
        "access": access,
        "workspace": access.workspace,
        "query": query,
        "snapshot": snapshot,
        "page": page,
        "rows": list_selectors.experiment_rows(access=access, experiments=page.experiments),
        "bookmark_strip": strip,
        "starred": strip.starred,
        "list_url": list_url,
        "canonical_url": list_url + query.url_suffix(),
        "tab_groups": _tab_groups(query, page, list_url, counts_known=snapshot.available),
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
    if _wants_fragment(request):
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
    if _wants_fragment(request):
        return _render_list(request, access, query, snapshot)
    if snapshot.error:
        messages.error(request, snapshot.error)
    else:
        messages.success(request, MSG_REFRESHED)
    return redirect(_list_url(access.workspace.pk) + query.url_suffix())


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


_READ_CLAIM = object()


def _row_for(
    access: WorkspaceAccess,
    experiment: Experiment,
    *,
    notice: str = "",
    notice_ok: bool = False,
    claim: Any = _READ_CLAIM,
) -> list_selectors.ExperimentRow:
    """One row's display; `claim` is the attempt holding the claim when the caller knows it."""
    if claim is _READ_CLAIM:
        claims = conclusion_selectors.claim_for_experiments(workspace=access.workspace, experiment_ids=[experiment.id])
        claim = claims.get(experiment.id)
    return list_selectors.experiment_row(
        access=access, experiment=experiment, claim=claim, notice=notice, notice_ok=notice_ok
    )


def _conclude_section_context(
    access: WorkspaceAccess, experiment: Experiment, *, notice: str = "", notice_ok: bool = False
) -> dict[str, Any]:
    """The experiment page's conclusion section: its row state, its decision, and every attempt."""
    claims = conclusion_selectors.claims_by_action(workspace=access.workspace, experiment_id=experiment.id)
    decision = claims.get(AttemptAction.DECISION)
    claim = claims.get(AttemptAction.CONCLUSION)
    return {
        "row": _row_for(access, experiment, notice=notice, notice_ok=notice_ok, claim=claim),
        "decision": decision,
        "decision_text": list_selectors.decision_text(experiment.status, decision),
        "show_decide": access.can_conclude and experiment.status == "concluded" and decision is None,
        "attempts": conclusion_selectors.attempt_list_for_experiment(
            workspace=access.workspace, experiment_id=experiment.id
        ),
        "conclude_suffix": "?back=detail",
        "back": "detail",
    }


def _detail_context(access: WorkspaceAccess, read: page_selectors.ExperimentRead) -> dict[str, Any]:
    experiment = read.experiment
    return {
        "access": access,
        "workspace": access.workspace,
        "experiment": experiment,
        "read": read,
        "list_url": _list_url(access.workspace.pk),
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
        **_conclude_section_context(access, experiment),
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
        context.update(list_url=_list_url(access.workspace.pk), experiment_id=experiment_id, retry_url=request.path)
        return render(request, DETAIL_TEMPLATE, context, status=503)
    return render(request, DETAIL_TEMPLATE, _detail_context(access, read))


# --- Force conclude --------------------------------------------------------------------


def _back_url(access: WorkspaceAccess, experiment_id: str, back: str, list_query: str) -> str:
    if back == "detail":
        return reverse("experiments:experiment-detail", args=[access.workspace.pk, experiment_id])
    return _list_url(access.workspace.pk) + ExperimentListQuery.from_querystring(list_query).url_suffix()


def _forbidden(request: HtmxHttpRequest, access: WorkspaceAccess) -> HttpResponse:
    # 403 even for htmx (htmx will not swap it): the button is never shown to
    # viewers, so only a hand-made request gets here, and it gets a readable page.
    message = MSG_FORBIDDEN.format(workspace=access.workspace.name, role=access.role_label.lower())
    context = {
        "access": access,
        "workspace": access.workspace,
        "forbidden": message,
        "back_url": _list_url(access.workspace.pk),
    }
    template = CONCLUDE_TEMPLATE + "#body" if _wants_fragment(request) else CONCLUDE_TEMPLATE
    return render(request, template, context, status=403)


def _form_response(request: HtmxHttpRequest, context: dict[str, Any]) -> HttpResponse:
    """The dialog's content (htmx) or the no-JavaScript page, e.g. with validation errors."""
    if _wants_fragment(request):
        response = render(request, CONCLUDE_TEMPLATE + "#body", context)
        if request.method == "POST":
            # The form targets the row; errors belong in the dialog, which stays open.
            retarget(response, "#force-conclude-body")
            reswap(response, "innerHTML")
        return response
    return render(request, CONCLUDE_TEMPLATE, context)


def _outcome_fragment(
    request: HtmxHttpRequest,
    access: WorkspaceAccess,
    experiment: Experiment,
    outcome: conclusion_services.ConclusionOutcome,
    *,
    back: str,
    list_query: str,
    dialog: str = CONCLUDE_TEMPLATE + "#dialog",
    before: Any = None,
) -> HttpResponse:
    """The updated row (or page section) in place, a fresh closed dialog out of band, and,
    when the experiment changed, what else on the page shows its status (out of band)."""
    shown = outcome.experiment if outcome.experiment is not None else experiment
    # A request for approval went as asked: said in the tone of a success, though nothing changed yet.
    notice_ok = outcome.ok or outcome.state == AttemptState.AWAITING_APPROVAL
    if back == "detail":
        context = _conclude_section_context(access, shown, notice=outcome.message, notice_ok=notice_ok)
        template = DETAIL_TEMPLATE + "#conclude-section"
    else:
        row = _row_for(access, shown, notice=outcome.message, notice_ok=notice_ok, claim=outcome.claim_holder)
        context = {"row": row, "conclude_suffix": "?" + urlencode({"back": "list", "list_query": list_query})}
        context["keep_star"] = True  # the star on the page stays (hx-preserve): no bookmark query
        template = LIST_TEMPLATE + "#row"
    context.update(access=access, workspace=access.workspace)
    html = render_to_string(template, context, request=request)
    if outcome.ok:
        html += _changed_elsewhere(request, access, shown, back=back, list_query=list_query, before=before)
    # Replacing the open <dialog> element closes it: no script needed.
    html += render_to_string(dialog, {"oob": True}, request=request)
    response = HttpResponse(html)
    if outcome.ok:
        trigger_client_event(response, "showToast", {"message": outcome.message})
    return response


def _changed_elsewhere(
    request: HtmxHttpRequest,
    access: WorkspaceAccess,
    experiment: Any,
    *,
    back: str,
    list_query: str,
    before: Any = None,
) -> str:
    """Out-of-band swaps for an experiment whose status just changed: on its page the
    header (status badge, days running) and the end date; on the list the tab counts."""
    context: dict[str, Any] = {"access": access, "workspace": access.workspace, "oob": True}
    if back == "detail":
        context.update(
            experiment=experiment,
            row=_row_for(access, experiment),
            overview=page_selectors.experiment_overview(workspace=access.workspace, experiment=experiment),
            starred=bookmark_selectors.bookmark_ids_for_experiments(
                workspace=access.workspace, experiment_ids=[experiment.id]
            ),
        )
        html = render_to_string(DETAIL_TEMPLATE + "#experiment-header", context, request=request)
        return html + render_to_string(DETAIL_TEMPLATE + "#experiment-end", context, request=request)
    # The service dropped the cached list, and reading it again would cost every press a
    # second call to Mixpanel. The copy read before the press, with this experiment moved
    # to its new status, gives the same counts.
    if before is None or before.index is None:
        return ""  # the counts stay as they were; the next page load shows them
    query = ExperimentListQuery.from_querystring(list_query)
    page = list_selectors.experiment_list_page(
        snapshot=before, status=query.status, q=query.q, sort=query.sort, page=query.page, page_size=query.size
    )
    counts = dict(page.counts)
    was = before.index.get(experiment.id)
    if was is not None and was.status != experiment.status and counts.get(was.status, 0) > 0:
        counts[was.status] -= 1
        counts[experiment.status] = counts.get(experiment.status, 0) + 1
    page = dataclasses.replace(page, counts=counts)
    context["tab_groups"] = _tab_groups(query, page, _list_url(access.workspace.pk), counts_known=True)
    return render_to_string(LIST_TEMPLATE + "#status-tabs", context, request=request)


@require_http_methods(["GET", "POST"])
def experiment_force_conclude(request: HtmxHttpRequest, workspace_pk: int, experiment_id: str) -> HttpResponse:
    """GET: the confirmation dialog (or, without JavaScript, its page). POST: conclude once."""
    access = get_workspace_access(request, workspace_pk)
    if not access.can_conclude:
        return _forbidden(request, access)
    data = request.POST if request.method == "POST" else request.GET
    back = "detail" if data.get("back") == "detail" else "list"
    list_query = ExperimentListQuery.from_querystring(data.get("list_query", "")).querystring()
    context: dict[str, Any] = {
        "access": access,
        "workspace": access.workspace,
        "back": back,
        "back_url": _back_url(access, experiment_id, back, list_query),
        "hx_target": "#conclude-section" if back == "detail" else "#" + list_selectors.experiment_dom_id(experiment_id),
    }
    before = list_selectors.experiment_list_cached(workspace=access.workspace)
    listed = list_selectors.experiment_lookup(workspace=access.workspace, experiment_id=experiment_id)
    if listed.unavailable:
        context["unavailable"] = listed.unavailable
        if request.method == "POST" and not _wants_fragment(request):
            messages.error(request, listed.unavailable)
            return redirect(context["back_url"])
        return _form_response(request, context)
    if listed.experiment is None:
        raise Http404(MSG_NO_SUCH_EXPERIMENT)
    experiment = listed.experiment

    context.update(experiment=experiment, conclude_url=request.path)
    if request.method == "GET":
        context["row"] = _row_for(access, experiment)
        context["form"] = ForceConcludeForm(experiment=experiment, initial={"back": back, "list_query": list_query})
        return _form_response(request, context)

    form = ForceConcludeForm(request.POST, experiment=experiment)
    if not form.is_valid():
        context.update(row=_row_for(access, experiment), form=form)
        return _form_response(request, context)

    outcome = conclusion_services.experiment_force_conclude(
        workspace=access.workspace,
        user=request.user,
        experiment_id=experiment.id,
        experiment_name=experiment.name,
        reason_category=form.cleaned_data["reason_category"],
        reason_text=form.cleaned_data["reason_text"],
        end_date=form.cleaned_data["end_date"],
        client=mixpanel.client_for(access.workspace),
    )
    if outcome.attempt is not None:
        observability.bind(attempt_id=outcome.attempt.pk)  # on this request's log line
    if _wants_fragment(request):
        return _outcome_fragment(request, access, experiment, outcome, back=back, list_query=list_query, before=before)
    if outcome.ok or outcome.state == AttemptState.AWAITING_APPROVAL:
        messages.success(request, outcome.message)
    elif outcome.state in (AttemptState.UNKNOWN, AttemptState.REQUESTED, "blocked"):
        messages.warning(request, outcome.message)
    else:
        messages.error(request, outcome.message)
    return redirect(context["back_url"])


# --- Record the decision ----------------------------------------------------------------


@require_http_methods(["GET", "POST"])
def experiment_decide(request: HtmxHttpRequest, workspace_pk: int, experiment_id: str) -> HttpResponse:
    """GET: the decision dialog (or, without JavaScript, its page). POST: record the decision once."""
    access = get_workspace_access(request, workspace_pk)
    back_url = reverse("experiments:experiment-detail", args=[access.workspace.pk, experiment_id])
    context: dict[str, Any] = {"access": access, "workspace": access.workspace, "back_url": back_url}
    if not access.can_conclude:
        # 403 even for htmx: the button is never shown to viewers, so only a hand-made request gets here.
        context["forbidden"] = MSG_DECIDE_FORBIDDEN.format(
            workspace=access.workspace.name, role=access.role_label.lower()
        )
        template = DECIDE_TEMPLATE + "#body" if _wants_fragment(request) else DECIDE_TEMPLATE
        return render(request, template, context, status=403)
    try:
        read = page_selectors.experiment_read(workspace=access.workspace, experiment_id=experiment_id)
    except page_selectors.ExperimentNotFound as exc:
        raise Http404(str(exc)) from None
    if read.experiment is None:
        context["unavailable"] = read.error
        return _decide_form_response(request, context)
    experiment = read.experiment
    section = _conclude_section_context(access, experiment)
    context.update(experiment=experiment, decide_url=request.path, show_decide=section["show_decide"])
    context["decision_text"] = section["decision_text"]
    keys = decision_services.variant_keys(experiment)
    form = DecisionForm(request.POST or None, variant_keys=keys)
    if request.method == "GET" or not form.is_valid():
        context["form"] = form
        return _decide_form_response(request, context)

    outcome = decision_services.experiment_decide(
        workspace=access.workspace,
        user=request.user,
        experiment_id=experiment.id,
        experiment_name=experiment.name,
        variant=form.variant(),
        note=form.cleaned_data["note"],
        client=mixpanel.client_for(access.workspace),
    )
    if outcome.attempt is not None:
        observability.bind(attempt_id=outcome.attempt.pk)
    if _wants_fragment(request):
        dialog = DECIDE_TEMPLATE + "#dialog"
        return _outcome_fragment(request, access, experiment, outcome, back="detail", list_query="", dialog=dialog)
    if outcome.ok or outcome.state == AttemptState.AWAITING_APPROVAL:
        messages.success(request, outcome.message)
    elif outcome.state in (AttemptState.UNKNOWN, AttemptState.REQUESTED, conclusion_services.STATE_BLOCKED):
        messages.warning(request, outcome.message)
    else:
        messages.error(request, outcome.message)
    return redirect(back_url)


def _decide_form_response(request: HtmxHttpRequest, context: dict[str, Any]) -> HttpResponse:
    """The decision dialog's content (htmx) or its no-JavaScript page."""
    if _wants_fragment(request):
        response = render(request, DECIDE_TEMPLATE + "#body", context)
        if request.method == "POST":
            # The form targets the section; errors belong in the dialog, which stays open.
            retarget(response, "#decide-body")
            reswap(response, "innerHTML")
        return response
    return render(request, DECIDE_TEMPLATE, context)
