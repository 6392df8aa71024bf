"""Home page and health check."""

from __future__ import annotations

from django.contrib.auth.decorators import login_not_required
from django.db import DatabaseError, connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

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
    """For load balancers: 200 when the database answers, 503 when it does not."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except DatabaseError:
        return JsonResponse({"status": "error", "database": "unreachable"}, status=503)
    return JsonResponse({"status": "ok", "database": "ok"})
