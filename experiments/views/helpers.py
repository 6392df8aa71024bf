"""What every view module shares: the htmx request type, the access check, the addresses of
the workspace pages, and the row and conclusion section that several screens redraw.

Views import from here and never from each other.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import Http404, HttpRequest
from django.urls import reverse
from django_htmx.middleware import HtmxDetails

from experiments.mixpanel.experiment import Experiment
from experiments.models import AttemptAction
from experiments.queries import STATUS_TAB_GROUPS, STATUS_TABS, ExperimentListQuery
from experiments.selectors import conclusions as conclusion_selectors
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


def flash_outcome(request: HttpRequest, outcome: AttemptOutcome) -> None:
    """Without JavaScript: what a press came to, as a message on the page it returns to."""
    {"success": messages.success, "warning": messages.warning, "error": messages.error}[outcome.tone](
        request, outcome.message
    )
