"""The two presses on an experiment: Force conclude and Record the decision.

Each is a dialog (GET) and a POST that calls its service once. htmx gets the redrawn row
or conclusion section, the closed dialog and whatever else on the page changed, out of
band; without JavaScript the POST redirects with a message. Expected failures answer 200
with a readable fragment (htmx 2 does not swap 4xx/5xx).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.contrib import messages
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_http_methods
from django_htmx.http import reswap, retarget, trigger_client_event

from experiments import observability
from experiments.forms import DecisionForm, ForceConcludeForm
from experiments.mixpanel import client as mixpanel
from experiments.mixpanel.experiment import Experiment
from experiments.models import AttemptAction
from experiments.queries import ExperimentListQuery
from experiments.selectors import approval_risk
from experiments.selectors import experiment_list as list_selectors
from experiments.selectors import experiment_page as page_selectors
from experiments.selectors import experiment_rows as row_selectors
from experiments.selectors import plans as plan_selectors
from experiments.selectors.workspaces import WorkspaceAccess
from experiments.services import conclusions as conclusion_services
from experiments.services import decisions as decision_services
from experiments.services.attempts import AttemptOutcome
from experiments.views.helpers import (
    DETAIL_TEMPLATE,
    LIST_TEMPLATE,
    HtmxHttpRequest,
    changed_elsewhere,
    conclude_section_context,
    experiment_back_url,
    experiment_list_url,
    flash_outcome,
    get_workspace_access,
    row_for,
    wants_fragment,
)

CONCLUDE_TEMPLATE = "experiments/force_conclude.html"
DECIDE_TEMPLATE = "experiments/decide.html"
MSG_FORBIDDEN = (
    "Only concluders and admins of {workspace} can force conclude experiments. You are a {role} here; "
    "ask a workspace admin if you need to."
)
MSG_DECIDE_FORBIDDEN = (
    "Only concluders and admins of {workspace} can record decisions on experiments. You are a {role} here; "
    "ask a workspace admin if you need to."
)
MSG_NO_SUCH_EXPERIMENT = "This workspace has no such experiment."


def _forbidden(request: HtmxHttpRequest, access: WorkspaceAccess) -> HttpResponse:
    # 403 even for htmx (htmx will not swap it): the button is never shown to
    # viewers, so only a hand-made request gets here, and it gets a readable page.
    message = MSG_FORBIDDEN.format(workspace=access.workspace.name, role=access.role_label.lower())
    context = {
        "access": access,
        "workspace": access.workspace,
        "forbidden": message,
        "back_url": experiment_list_url(access.workspace.pk),
    }
    template = CONCLUDE_TEMPLATE + "#body" if wants_fragment(request) else CONCLUDE_TEMPLATE
    return render(request, template, context, status=403)


def _dialog_response(request: HtmxHttpRequest, context: dict[str, Any], template: str, body_id: str) -> HttpResponse:
    """A dialog's content (htmx) or its no-JavaScript page, e.g. with validation errors."""
    if wants_fragment(request):
        response = render(request, template + "#body", context)
        if request.method == "POST":
            # The form targets the row or section; errors belong in the dialog, which stays open.
            retarget(response, "#" + body_id)
            reswap(response, "innerHTML")
        return response
    return render(request, template, context)


def _form_response(request: HtmxHttpRequest, context: dict[str, Any]) -> HttpResponse:
    return _dialog_response(request, context, CONCLUDE_TEMPLATE, "force-conclude-body")


def _outcome_fragment(
    request: HtmxHttpRequest,
    access: WorkspaceAccess,
    experiment: Experiment,
    outcome: AttemptOutcome,
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
    tone = outcome.tone
    in_place = True
    if back == "detail":
        context = conclude_section_context(access, shown, notice=outcome.message, notice_tone=tone)
        template = DETAIL_TEMPLATE + "#conclude-section"
    else:
        row = row_for(access, shown, notice=outcome.message, notice_tone=tone, claim=outcome.claim_holder)
        in_place = row.notice_in_row
        context = {"row": row, "conclude_suffix": "?" + urlencode({"back": "list", "list_query": list_query})}
        context["keep_star"] = True  # the star on the page stays (hx-preserve): no bookmark query
        template = LIST_TEMPLATE + "#row"
    context.update(access=access, workspace=access.workspace)
    html = render_to_string(template, context, request=request)
    # A success moves the experiment's status; anything else may change what waits (a request
    # asked for, an answer lost), but never the status, so each costs only what it changes.
    html += changed_elsewhere(
        request,
        access,
        shown,
        back=back,
        list_query=list_query,
        before=before,
        status_changed=outcome.ok,
        waiting_changed=not outcome.ok,
    )
    # Replacing the open <dialog> element closes it: no script needed.
    html += render_to_string(dialog, {"oob": True}, request=request)
    response = HttpResponse(html)
    # The page's one notice: every success, and on the list whatever the row does not say itself.
    if outcome.ok or not in_place:
        trigger_client_event(response, "showToast", {"message": outcome.message})
    return response


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
        "back_url": experiment_back_url(access, experiment_id, back, list_query),
        "hx_target": "#conclude-section" if back == "detail" else "#" + row_selectors.experiment_dom_id(experiment_id),
    }
    before = list_selectors.experiment_list_cached(workspace=access.workspace)
    listed = list_selectors.experiment_lookup(workspace=access.workspace, experiment_id=experiment_id)
    if listed.unavailable:
        context["unavailable"] = listed.unavailable
        if request.method == "POST" and not wants_fragment(request):
            messages.error(request, listed.unavailable)
            return redirect(context["back_url"])
        return _form_response(request, context)
    if listed.experiment is None:
        raise Http404(MSG_NO_SUCH_EXPERIMENT)
    experiment = listed.experiment

    context.update(experiment=experiment, conclude_url=request.path)
    # Said before anyone presses; the press judges again on its own fresh read.
    context["approval"] = approval_risk.press_verdict(
        workspace=access.workspace, action=AttemptAction.CONCLUSION, experiment=experiment, now=timezone.now()
    )
    if request.method == "GET":
        context["plan"] = plan_selectors.plan_status(workspace=access.workspace, experiment_id=experiment.id)
        context["row"] = row_for(access, experiment)
        context["form"] = ForceConcludeForm(experiment=experiment, initial={"back": back, "list_query": list_query})
        return _form_response(request, context)

    form = ForceConcludeForm(request.POST, experiment=experiment)
    if not form.is_valid():
        context.update(row=row_for(access, experiment), form=form)
        context["plan"] = plan_selectors.plan_status(workspace=access.workspace, experiment_id=experiment.id)
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
    if wants_fragment(request):
        return _outcome_fragment(request, access, experiment, outcome, back=back, list_query=list_query, before=before)
    flash_outcome(request, outcome)
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
        template = DECIDE_TEMPLATE + "#body" if wants_fragment(request) else DECIDE_TEMPLATE
        return render(request, template, context, status=403)
    try:
        read = page_selectors.experiment_read(workspace=access.workspace, experiment_id=experiment_id)
    except page_selectors.ExperimentNotFound as exc:
        raise Http404(str(exc)) from None
    if read.experiment is None:
        context["unavailable"] = read.error
        return _decide_form_response(request, context)
    experiment = read.experiment
    section = conclude_section_context(access, experiment)
    context.update(experiment=experiment, decide_url=request.path, show_decide=section["show_decide"])
    context["decision_text"] = section["decision_text"]
    options = page_selectors.decision_options(experiment=experiment)
    form = DecisionForm(request.POST or None, options=options)
    if request.method == "GET" or not form.is_valid():
        context["plan"] = plan_selectors.plan_status(workspace=access.workspace, experiment_id=experiment.id)
        # Each choice says before anyone presses whether it needs approval; the press judges again.
        verdicts = approval_risk.decision_verdicts(
            workspace=access.workspace,
            experiment=experiment,
            variants=[DecisionForm.variant_of(choice.value) for choice in form.choices],
            now=timezone.now(),
        )
        context.update(form=form, decision_rows=list(zip(form.choices, verdicts, strict=True)))
        context["approval_policy"] = access.workspace.approval_policy
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
    if wants_fragment(request):
        dialog = DECIDE_TEMPLATE + "#dialog"
        return _outcome_fragment(request, access, experiment, outcome, back="detail", list_query="", dialog=dialog)
    flash_outcome(request, outcome)
    return redirect(back_url)


def _decide_form_response(request: HtmxHttpRequest, context: dict[str, Any]) -> HttpResponse:
    return _dialog_response(request, context, DECIDE_TEMPLATE, "decide-body")
