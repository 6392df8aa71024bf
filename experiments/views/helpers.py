"""What every view module shares: the htmx request type, the access check, the addresses of
the workspace pages, and the row and conclusion section that several screens redraw.

Views import from here and never from each other.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from django.contrib import messages
from django.http import Http404, HttpRequest
from django.template.loader import render_to_string
from django.urls import reverse
from django_htmx.middleware import HtmxDetails

from experiments.mixpanel.experiment import Experiment
from experiments.models import AttemptAction
from experiments.queries import STATUS_TAB_GROUPS, STATUS_TABS, WAITING_TAB_GROUP, ExperimentListQuery
from experiments.selectors import approvals as approval_selectors
from experiments.selectors import bookmarks as bookmark_selectors
from experiments.selectors import conclusions as conclusion_selectors
from experiments.selectors import experiment_list as list_selectors
from experiments.selectors import experiment_page as page_selectors
from experiments.selectors import experiment_rows as row_selectors
from experiments.selectors import workspaces as workspace_selectors
from experiments.selectors.workspaces import WorkspaceAccess
from experiments.services.attempts import AttemptOutcome

LIST_TEMPLATE = "experiments/experiment_list.html"
DETAIL_TEMPLATE = "experiments/experiment_detail.html"


class HtmxHttpRequest(HttpRequest):
    htmx: HtmxDetails


def wants_fragment(request: HtmxHttpRequest) -> bool:
    """Whether to answer with the template's partial rather than the whole page."""
    # A history-restore request (back button after a cache miss) needs the whole page.
    return bool(request.htmx) and not request.htmx.history_restore_request


def get_workspace_access(request: HttpRequest, workspace_pk: int) -> WorkspaceAccess:
    """The workspace and the user's role in it; 404 when the user is not a member.

    404 rather than 403 so an outsider cannot learn which workspaces exist.
    """
    access = workspace_selectors.workspace_access(user=request.user, workspace_pk=workspace_pk)
    if access is None:
        raise Http404("No such workspace.")
    return access


def experiment_list_url(workspace_pk: int) -> str:
    return reverse("experiments:experiment-list", args=[workspace_pk])


def experiment_back_url(access: WorkspaceAccess, experiment_id: str, back: str, list_query: str) -> str:
    if back == "detail":
        return reverse("experiments:experiment-detail", args=[access.workspace.pk, experiment_id])
    return experiment_list_url(access.workspace.pk) + ExperimentListQuery.from_querystring(list_query).url_suffix()


def tab_groups(query: ExperimentListQuery, page: Any, list_url: str, counts_known: bool) -> list[dict[str, Any]]:
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


def waiting_tabs(query: ExperimentListQuery, counts: dict[str, int], list_url: str) -> dict[str, Any]:
    """The list's Waiting tabs (awaiting approval, being concluded), drawn like a status group."""
    labels = dict(STATUS_TABS)
    label, values = WAITING_TAB_GROUP
    tabs = [
        {
            "label": labels[value],
            "count": counts.get(value, 0),
            "url": list_url + query.with_(status=value).url_suffix(),
            "current": value == query.status,
        }
        for value in values
    ]
    return {"label": label, "tabs": tabs}


_READ_CLAIM = object()


def row_for(
    access: WorkspaceAccess,
    experiment: Experiment,
    *,
    notice: str = "",
    notice_tone: str = "",
    claim: Any = _READ_CLAIM,
) -> row_selectors.ExperimentRow:
    """One row's display; `claim` is the attempt holding the claim when the caller knows it."""
    if claim is _READ_CLAIM:
        claims = conclusion_selectors.claim_for_experiments(workspace=access.workspace, experiment_ids=[experiment.id])
        claim = claims.get(experiment.id)
    return row_selectors.experiment_row(
        access=access, experiment=experiment, claim=claim, notice=notice, notice_tone=notice_tone
    )


def conclude_section_context(
    access: WorkspaceAccess, experiment: Experiment, *, notice: str = "", notice_tone: str = ""
) -> dict[str, Any]:
    """The experiment page's conclusion section: its row state, its decision, and every attempt."""
    claims = conclusion_selectors.claims_by_action(workspace=access.workspace, experiment_id=experiment.id)
    decision = claims.get(AttemptAction.DECISION)
    claim = claims.get(AttemptAction.CONCLUSION)
    return {
        "approvers": approvers_of(claim) if claim is not None and claim.is_awaiting_approval else "",
        "decision_approvers": approvers_of(decision) if decision is not None and decision.is_awaiting_approval else "",
        "row": row_for(access, experiment, notice=notice, notice_tone=notice_tone, claim=claim),
        "decision": decision,
        "decision_text": row_selectors.decision_text(experiment.status, decision),
        "show_decide": access.can_conclude and experiment.status == "concluded" and decision is None,
        "attempts": conclusion_selectors.attempt_list_for_experiment(
            workspace=access.workspace, experiment_id=experiment.id
        ),
        "conclude_suffix": "?back=detail",
        "back": "detail",
    }


def approvers_of(attempt: Any) -> str:
    """Who may approve a waiting request, by name ("Quinn (quinn) or Ada (ada)"): one query."""
    names = approval_selectors.approvers_by_workspace(
        workspace_ids={attempt.workspace_id}, requester_id=attempt.actor_id
    )
    return approval_selectors.approvers_text(names.get(attempt.workspace_id, ()))


def flash_outcome(request: HttpRequest, outcome: AttemptOutcome) -> None:
    """Without JavaScript: what a press came to, as a message on the page it returns to."""
    {"success": messages.success, "warning": messages.warning, "error": messages.error}[outcome.tone](
        request, outcome.message
    )


def changed_elsewhere(
    request: HttpRequest,
    access: WorkspaceAccess,
    experiment: Any,
    *,
    back: str,
    list_query: str,
    before: Any = None,
    status_changed: bool = True,
    waiting_changed: bool = False,
) -> str:
    """Out-of-band swaps for what else on the page an attempt changed. On the experiment page,
    when its status changed: the header (status badge, days running) and the end date. On the
    list: the status tabs' counts when its status changed, and the Waiting tabs when what
    waits changed (one query)."""
    context: dict[str, Any] = {"access": access, "workspace": access.workspace, "oob": True}
    if back == "detail":
        if not status_changed:
            return ""
        context.update(
            experiment=experiment,
            row=row_for(access, experiment),
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
    list_url = experiment_list_url(access.workspace.pk)
    html = ""
    if status_changed:
        page = list_selectors.experiment_list_page(
            snapshot=before, status=query.status, q=query.q, sort=query.sort, page=query.page, page_size=query.size
        )
        counts = dict(page.counts)
        was = before.index.get(experiment.id)
        if was is not None and was.status != experiment.status and counts.get(was.status, 0) > 0:
            counts[was.status] -= 1
            counts[experiment.status] = counts.get(experiment.status, 0) + 1
        page = dataclasses.replace(page, counts=counts)
        context["tab_groups"] = tab_groups(query, page, list_url, counts_known=True)
        html += render_to_string(LIST_TEMPLATE + "#status-tabs", context, request=request)
    if waiting_changed:
        waiting = conclusion_selectors.waiting_conclusions(workspace=access.workspace)
        counts = row_selectors.waiting_tab_counts(
            snapshot=before, waiting=waiting, q=query.q, workspace=access.workspace
        )
        shown = access.workspace.requires_approval or any(counts.values()) or query.status in counts
        context["waiting_tabs"] = waiting_tabs(query, counts, list_url) if shown else None
        html += render_to_string(LIST_TEMPLATE + "#waiting-tabs", context, request=request)
    return html
