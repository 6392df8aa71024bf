"""Scheduling a Force conclude from the experiment page, and cancelling it. Plain forms:
each POST calls its service once and returns to the page with what it came to."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.views.decorators.http import require_POST

from experiments.forms import ScheduleForm
from experiments.selectors import experiment_list as list_selectors
from experiments.selectors import schedules as schedule_selectors
from experiments.services import schedules as schedule_services
from experiments.views.helpers import HtmxHttpRequest, get_workspace_access

MSG_NO_SCHEDULE = "This experiment has no scheduled Force conclude waiting."
MSG_NO_EXPERIMENT = "This workspace has no such experiment."


def _back(workspace_pk: int, experiment_id: str) -> str:
    return reverse("experiments:experiment-detail", args=[workspace_pk, experiment_id]) + "#plan-heading"


@require_POST
def experiment_schedule(request: HtmxHttpRequest, workspace_pk: int, experiment_id: str) -> HttpResponse:
    """Schedule a Force conclude of the experiment (the service checks the role, as a press does)."""
    access = get_workspace_access(request, workspace_pk)
    back = _back(access.workspace.pk, experiment_id)
    form = ScheduleForm(request.POST)
    if not form.is_valid():
        for errors in form.errors.values():
            for error in errors:
                messages.error(request, f"Not scheduled: {error}")
        return redirect(back)
    listed = list_selectors.experiment_lookup(workspace=access.workspace, experiment_id=experiment_id)
    if listed.unavailable or listed.experiment is None:
        messages.error(request, f"Not scheduled: {listed.unavailable or MSG_NO_EXPERIMENT}")
        return redirect(back)
    outcome = schedule_services.schedule_set(
        workspace=access.workspace,
        user=request.user,
        experiment_id=experiment_id,
        experiment_name=listed.experiment.name,
        experiment_status=listed.experiment.status,
        run_at=form.cleaned_data["run_at"],
        reason_category=form.cleaned_data["reason_category"],
        reason_text=form.cleaned_data["reason_text"],
    )
    (messages.success if outcome.ok else messages.error)(
        request, outcome.message if outcome.ok else f"Not scheduled: {outcome.message}"
    )
    return redirect(back)


@require_POST
def experiment_schedule_cancel(request: HtmxHttpRequest, workspace_pk: int, experiment_id: str) -> HttpResponse:
    """Cancel the experiment's waiting schedule (its author or a workspace admin)."""
    access = get_workspace_access(request, workspace_pk)
    back = _back(access.workspace.pk, experiment_id)
    schedule = schedule_selectors.live_schedule(workspace=access.workspace, experiment_id=experiment_id)
    if schedule is None:
        messages.error(request, MSG_NO_SCHEDULE)
        return redirect(back)
    outcome = schedule_services.schedule_cancel(schedule=schedule, user=request.user)
    (messages.success if outcome.ok else messages.error)(request, outcome.message)
    return redirect(back)
