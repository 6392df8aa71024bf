"""An open force-conclude attempt on the page: its "waiting for Mixpanel" line, and "Check Mixpanel now".

The line polls a cheap URL (one read of the attempt) every few seconds while the attempt
is open. Once it is final the answer is the experiment's row (or the experiment page's
conclusion section) drawn again with the outcome; that has no polling line, so polling
stops by itself. "Check Mixpanel now" reads the experiment through the same reconcile
code as the worker and the cron job: it never sends the PUT again.
"""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import urlencode

from django.contrib import messages
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import reswap, retarget, trigger_client_event

from experiments import observability
from experiments.mixpanel import client as mixpanel
from experiments.mixpanel.experiment import Experiment
from experiments.models import AttemptAction, ConclusionAttempt
from experiments.queries import ExperimentListQuery
from experiments.selectors import approvals as approval_selectors
from experiments.selectors import conclusions as conclusion_selectors
from experiments.selectors import experiment_list as list_selectors
from experiments.selectors import experiment_page as page_selectors
from experiments.selectors import home as home_selectors
from experiments.selectors import workspaces as workspace_selectors
from experiments.selectors.workspaces import WorkspaceAccess
from experiments.services import approvals as approval_services
from experiments.services import reconcile as reconcile_services
from experiments.views import errors
from experiments.views.helpers import (
    DETAIL_TEMPLATE,
    LIST_TEMPLATE,
    HtmxHttpRequest,
    approvers_of,
    changed_elsewhere,
    conclude_section_context,
    experiment_back_url,
    get_workspace_access,
    row_for,
    wants_fragment,
)

STATUS_TEMPLATE = "experiments/attempt_status.html"
HOME_TEMPLATE = "experiments/home.html"

MSG_APPROVED = "{reviewer} approved the request: the {what} of {name} was sent to Mixpanel."
MSG_APPLIED = "Mixpanel's answer is in: the {what} of {name} was applied."
MSG_NOT_APPLIED = "Mixpanel's answer is in: the {what} of {name} was not applied."
# What an attempt is, in those messages.
WHAT = {AttemptAction.CONCLUSION: "force conclude", AttemptAction.DECISION: "decision"}
MSG_CHECK_FORBIDDEN = "Only concluders and admins of this workspace can check an attempt with Mixpanel."
MSG_CHECK_TOO_EARLY = (
    "Too early to tell: the request may still be on its way to Mixpanel for another {seconds} s, and reading "
    "the experiment before then could mislead. Nothing was changed; this line updates by itself."
)
MSG_CHECK_UNRESOLVED = "Checked Mixpanel; nothing was changed. {detail}"


def _attempt_or_404(access: WorkspaceAccess, attempt_pk: int) -> ConclusionAttempt:
    attempt = conclusion_selectors.attempt_in_workspace(workspace=access.workspace, attempt_pk=attempt_pk)
    if attempt is None:
        raise Http404("This workspace has no such conclusion attempt.")
    observability.bind(attempt_id=attempt.pk)
    return attempt


def _place(request: HtmxHttpRequest) -> tuple[str, str]:
    """Where the attempt is shown ("list", "detail", or "home" for the approval inbox) and, on
    the list, the list's query."""
    back = request.GET.get("back")
    back = back if back in ("detail", "home") else "list"
    return back, ExperimentListQuery.from_querystring(request.GET.get("list_query", "")).querystring()


def _suffix(back: str, list_query: str) -> str:
    if back == "detail":
        return "?back=detail"
    return "?" + urlencode({"back": "list", "list_query": list_query})


def _final_notice(attempt: ConclusionAttempt) -> tuple[str, str]:
    """What the attempt came to, and its tone: "success", "warning" (a request closed with
    nothing sent: nothing went wrong) or "error"."""
    name = f"“{attempt.experiment_name}”" if attempt.experiment_name else f"experiment {attempt.experiment_id}"
    what = WHAT[attempt.action]
    if attempt.is_applied:
        approved = f"{attempt.reviewer_name} approved the request. " if attempt.reviewer_name else ""
        return approved + MSG_APPLIED.format(name=name, what=what), "success"
    if attempt.is_open:  # a request approved elsewhere, now on its way
        return MSG_APPROVED.format(reviewer=attempt.reviewer_name or "Someone", name=name, what=what), "success"
    if attempt.is_closed_unsent:
        return attempt.failure_reason, "warning"
    return attempt.failure_reason or MSG_NOT_APPLIED.format(name=name, what=what), "error"


def _toast(response: HttpResponse, message: str) -> HttpResponse:
    """The page's one notice (#toasts, read out politely)."""
    trigger_client_event(response, "showToast", {"message": message})
    return response


def _render_final(
    request: HtmxHttpRequest,
    access: WorkspaceAccess,
    attempt: ConclusionAttempt,
    notice: str,
    tone: str,
    *,
    shown: Experiment | None = None,
) -> HttpResponse:
    """The row (or conclusion section) drawn again with the outcome, in place of the waiting
    line, and what else on the page it changed, out of band, as after a direct press: the
    experiment page's header once applied, the list's tab counts. `shown` is the experiment
    as Mixpanel returned it, when the caller has it (an approval's PUT)."""
    back, list_query = _place(request)
    if back == "home":
        return _render_home(request, access, attempt, notice, tone, answered=True)
    if attempt.is_applied:
        # The process that resolved it dropped the shared list; a per-process cache (no
        # Redis) may still hold the experiment as active here.
        list_selectors.invalidate_experiment_list(workspace=access.workspace)
    snapshot = list_selectors.experiment_list_cached(workspace=access.workspace)
    listed = snapshot.index.get(attempt.experiment_id) if snapshot.index is not None else None
    context: dict[str, Any] = {"access": access, "workspace": access.workspace, "attempt": attempt}
    if listed is None:
        # The list cannot be read just now: say the outcome where the line was.
        context.update(notice=notice, notice_tone=tone)
        return render(request, STATUS_TEMPLATE + "#final", context)
    in_place = True
    if back == "detail":
        context.update(conclude_section_context(access, listed, notice=notice, notice_tone=tone))
        html = render_to_string(DETAIL_TEMPLATE + "#conclude-section", context, request=request)
        target = "#conclude-section"
        header = shown if shown is not None or not attempt.is_applied else _experiment_as_read(access, attempt)
        html += changed_elsewhere(request, access, header, back=back, list_query="", status_changed=header is not None)
    else:
        row = row_for(access, listed, notice=notice, notice_tone=tone)
        context.update(row=row, conclude_suffix=_suffix(back, list_query), keep_star=True)
        html = render_to_string(LIST_TEMPLATE + "#row", context, request=request)
        target = "#" + row.dom_id
        in_place = row.notice_in_row
        # It no longer waits; applied, it also moved from one status tab to another.
        html += changed_elsewhere(
            request,
            access,
            listed,
            back=back,
            list_query=list_query,
            before=snapshot,
            status_changed=attempt.is_applied,
            waiting_changed=True,
        )
    response = HttpResponse(html)
    retarget(response, target)
    reswap(response, "outerHTML")
    return response if in_place else _toast(response, notice)


def _experiment_as_read(access: WorkspaceAccess, attempt: ConclusionAttempt) -> Experiment | None:
    """The experiment read again, for its page's header once an attempt resolved elsewhere; None
    when it cannot be read just now (the header then waits for the next page load)."""
    try:
        read = page_selectors.experiment_read(workspace=access.workspace, experiment_id=attempt.experiment_id)
    except page_selectors.ExperimentNotFound:
        return None
    return read.experiment


def _render_home(
    request: HtmxHttpRequest,
    access: WorkspaceAccess,
    attempt: ConclusionAttempt,
    notice: str,
    tone: str,
    *,
    answered: bool,
) -> HttpResponse:
    """A request answered (or refused) from the home page: its item in the inbox or in "Your
    requests" drawn again with what happened, and, out of band, the inbox's count and the
    workspace card's counts."""
    context: dict[str, Any] = {
        "access": access,
        "attempt": attempt,
        "own": approval_selectors.OwnRequest(attempt),
        "notice": notice,
        "notice_tone": tone,
        "answered": answered,
    }
    own = attempt.actor_id == request.user.pk
    html = render_to_string(HOME_TEMPLATE + ("#own-request" if own else "#inbox-item"), context, request=request)
    workspaces = workspace_selectors.workspace_list_for_user(user=request.user)
    inbox = approval_selectors.approval_inbox(user=request.user, workspaces=workspaces)
    card = home_selectors.workspace_card(access=access)
    oob = {"oob": True, "inbox": inbox, "card": card}
    html += render_to_string(HOME_TEMPLATE + "#inbox-count", oob, request=request)
    html += render_to_string(HOME_TEMPLATE + "#workspace-counts", oob, request=request)
    return HttpResponse(html)


def _render_waiting(
    request: HtmxHttpRequest, access: WorkspaceAccess, attempt: ConclusionAttempt, *, whole: bool, message: str = ""
) -> HttpResponse:
    """A still-waiting attempt drawn again: on the experiment page its line (or, `whole`, the
    line with its buttons and `message`); on a list row its chip (and its one action), with
    `message` as the page's one notice, so the row stays one line."""
    back, list_query = _place(request)
    context = {
        "access": access,
        "workspace": access.workspace,
        "attempt": attempt,
        "conclude_suffix": _suffix(back, list_query),
    }
    if back == "list":
        response = render(request, f"{STATUS_TEMPLATE}#{'chip' if whole else 'chip-line'}", context)
        return _toast(response, message) if message else response
    part = "waiting" if whole else ("approval-line" if attempt.is_awaiting_approval else "line")
    approvers = approvers_of(attempt) if attempt.is_awaiting_approval else ""
    return render(request, f"{STATUS_TEMPLATE}#{part}", {**context, "check_message": message, "approvers": approvers})


@require_GET
def attempt_status(request: HtmxHttpRequest, workspace_pk: int, attempt_pk: int) -> HttpResponse:
    """Polled by an open attempt's line: the same line while open, the outcome once final."""
    access = get_workspace_access(request, workspace_pk)
    attempt = _attempt_or_404(access, attempt_pk)
    if not wants_fragment(request):
        back, list_query = _place(request)
        return redirect(experiment_back_url(access, attempt.experiment_id, back, list_query))
    if attempt.is_awaiting_approval or (attempt.is_open and request.GET.get("was") != "awaiting"):
        return _render_waiting(request, access, attempt, whole=False)
    return _render_final(request, access, attempt, *_final_notice(attempt))


@require_POST
def attempt_review(request: HtmxHttpRequest, workspace_pk: int, attempt_pk: int) -> HttpResponse:
    """Approve (which sends its force conclude or decision, once) or reject a request waiting for a second person;
    its requester may withdraw it. A refusal leaves the request as it was, saying why."""
    access = get_workspace_access(request, workspace_pk)
    attempt = _attempt_or_404(access, attempt_pk)
    if not access.can_conclude and attempt.actor_id != request.user.pk:
        # The buttons are not shown to viewers: only a hand-made request gets here.
        explanation = [approval_services.MSG_FORBIDDEN]
        return errors.error_page(request, 403, title="You cannot review this request", explanation=explanation)
    decision = request.POST.get("decision", "")
    client = mixpanel.client_for(access.workspace) if decision == approval_services.APPROVE else None
    outcome = approval_services.attempt_review(
        attempt=attempt, user=request.user, decision=decision, note=request.POST.get("note", ""), client=client
    )
    if attempt.is_awaiting_approval:  # refused: nothing changed
        if wants_fragment(request) and _place(request)[0] == "home":
            return _render_home(request, access, attempt, outcome.message, "warning", answered=False)
        if wants_fragment(request):
            return _render_waiting(request, access, attempt, whole=True, message=outcome.message)
        return _redirect_with(request, access, attempt, outcome.message, False)
    tone = "success" if outcome.ok or attempt.is_open else _final_notice(attempt)[1]
    message = outcome.message
    if attempt.reviewer_id == request.user.pk and decision == approval_services.APPROVE:
        message = f"You approved {attempt.actor_name}'s request. {message}"
    if wants_fragment(request):
        return _render_final(request, access, attempt, message, tone, shown=outcome.experiment)
    return _redirect_with(request, access, attempt, message, tone == "success")


@require_POST
def attempt_check(request: HtmxHttpRequest, workspace_pk: int, attempt_pk: int) -> HttpResponse:
    """ "Check Mixpanel now": read the experiment and record what it shows; never sends anything."""
    access = get_workspace_access(request, workspace_pk)
    if not access.can_conclude:
        # The button is not shown to viewers: only a hand-made request gets here.
        return errors.error_page(request, 403, title="You cannot check this attempt", explanation=[MSG_CHECK_FORBIDDEN])
    attempt = _attempt_or_404(access, attempt_pk)
    client = mixpanel.client_for(access.workspace)
    result = reconcile_services.conclusion_reconcile(attempt=attempt, client=client, by=request.user)
    if result.resolved:
        # Resolved now, or already by the worker or someone else: show the outcome either way.
        notice, tone = _final_notice(attempt)
        if wants_fragment(request):
            return _render_final(request, access, attempt, notice, tone)
        return _redirect_with(request, access, attempt, notice, tone == "success")
    if result.outcome == reconcile_services.TOO_EARLY:
        left = reconcile_services.attempt_judgeable_at(attempt) - timezone.now()
        message = MSG_CHECK_TOO_EARLY.format(seconds=max(1, math.ceil(left.total_seconds())))
    else:
        message = MSG_CHECK_UNRESOLVED.format(detail=result.message)
    if wants_fragment(request):
        return _render_waiting(request, access, attempt, whole=True, message=message)
    return _redirect_with(request, access, attempt, message, False)


def _redirect_with(
    request: HtmxHttpRequest, access: WorkspaceAccess, attempt: ConclusionAttempt, message: str, ok: bool
) -> HttpResponse:
    """Without JavaScript: back to the page, with what was found as a message."""
    (messages.success if ok else messages.info)(request, message)
    back, list_query = _place(request)
    if back == "home":
        return redirect("home")
    return redirect(experiment_back_url(access, attempt.experiment_id, back, list_query))
