"""Home page, liveness and readiness."""

from __future__ import annotations

from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from dashboard import health
from experiments.selectors import audit as audit_selectors
from experiments.selectors import workspaces as workspace_selectors


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    """The person's workspaces; an auditor without one lands on the audit trail, and a
    newcomer without any role is told whom to ask."""
    workspaces = workspace_selectors.workspace_list_for_user(user=request.user)
    if not workspaces and audit_selectors.audit_can_review_all(user=request.user):
        return redirect("experiments:audit-list")
    contacts = [] if workspaces else workspace_selectors.workspace_admin_contacts()
    return render(request, "experiments/home.html", {"workspaces": workspaces, "contacts": contacts})


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
