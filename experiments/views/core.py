"""Home page, liveness and readiness."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from django_htmx.http import push_url

from experiments.queries import MSG_HOME_WORKSPACE, SEARCH_MAX_LENGTH, HomeQuery
from experiments.selectors import approvals as approval_selectors
from experiments.selectors import audit as audit_selectors
from experiments.selectors import health
from experiments.selectors import home as home_selectors
from experiments.selectors import schedules as schedule_selectors
from experiments.selectors import workspaces as workspace_selectors
from experiments.views.helpers import HtmxHttpRequest, wants_fragment

HOME_TEMPLATE = "experiments/home.html"


@require_GET
def home(request: HtmxHttpRequest) -> HttpResponse:
    """The requests waiting for the person's approval and their own requests, their workspaces
    with their counts, and every active experiment in them, filtered by workspace and search
    from the URL; htmx gets the results alone.

    An auditor without a workspace lands on the audit trail, and a newcomer without
    any role is told whom to ask (DESK_ACCESS_CONTACT).
    """
    workspaces = workspace_selectors.workspace_list_for_user(user=request.user)
    if not workspaces:
        if audit_selectors.audit_can_review_all(user=request.user):
            return redirect("experiments:audit-list")
        # Whom to ask comes from settings: listing the admins would show other workspaces' names and people.
        return render(
            request, HOME_TEMPLATE, {"workspaces": workspaces, "access_contact": settings.DESK_ACCESS_CONTACT}
        )
    query = HomeQuery.from_querydict(request.GET, workspace_pks={access.workspace.pk for access in workspaces})
    overview = home_selectors.home_overview(workspaces=workspaces, workspace_pk=query.workspace, q=query.q)
    home_url = reverse("home")
    canonical_url = home_url + query.url_suffix()
    context = {
        "workspaces": workspaces,
        "overview": overview,
        # First on the page: what waits for this person, and what they asked for.
        "inbox": approval_selectors.approval_inbox(user=request.user, workspaces=workspaces),
        "own_requests": approval_selectors.own_requests(user=request.user, workspaces=workspaces),
        "scheduled": schedule_selectors.live_schedules_for_user(user=request.user),
        "can_approve": any(access.can_conclude for access in workspaces),
        "query": query,
        "chosen": next((a.workspace for a in workspaces if a.workspace.pk == query.workspace), None),
        "refused_message": MSG_HOME_WORKSPACE if query.workspace_refused else "",
        "canonical_url": canonical_url,
        "clear_search_url": home_url + query.with_(q="").url_suffix(),
        "all_workspaces_url": home_url + query.with_(workspace=None).url_suffix(),
        "row_limit": home_selectors.ROW_LIMIT,
        "search_max_length": SEARCH_MAX_LENGTH,
    }
    if wants_fragment(request):
        response = render(request, HOME_TEMPLATE + "#home-results", context)
        # The address bar shows the canonical form of what is on screen.
        push_url(response, canonical_url)
        return response
    return render(request, HOME_TEMPLATE, context)


@login_not_required
@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness: this process answers. Touches nothing else, so a database outage
    does not get every app server restarted; readiness is /readyz."""
    return JsonResponse({"status": "ok"})


@login_not_required
@never_cache
@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    """Readiness, for load balancers: 200 only when the database answers, every
    migration is applied and the cache answers; else 503. The body names each
    check's state, never an error's text (it could name hosts)."""
    checks = health.readiness()
    ready = all(value == "ok" for value in checks.values())
    return JsonResponse({"status": "ok" if ready else "error", **checks}, status=200 if ready else 503)


@login_not_required
@never_cache
@require_GET
def readyz_worker(request: HttpRequest) -> JsonResponse:
    """The task worker's readiness, for monitoring: 200 while a worker beat within
    WORKER_STALE_SECONDS and no task has been due for longer than WORKER_MAX_DELAY_SECONDS;
    else 503, with each check's state."""
    checks = health.worker_readiness()
    ready = all(value == "ok" for value in checks.values())
    return JsonResponse({"status": "ok" if ready else "error", **checks}, status=200 if ready else 503)
