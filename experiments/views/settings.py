"""A workspace's settings page: where its team hears about outcomes, and two-person approval.

Workspace admins only (others get the readable 403 page; outsiders a 404). The webhook
address is write-only: the page shows its hint, and a typed address is never drawn
back, logged, or shown in an error report or on Django's debug page (sensitive_post_parameters,
which observability.SecretsHiddenReporterFilter applies in debug mode too).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_http_methods, require_POST

from experiments.forms import WorkspaceSettingsForm
from experiments.models import (
    APPROVAL_WINDOW_MAX_HOURS,
    APPROVAL_WINDOW_MIN_HOURS,
    ApprovalPolicy,
    approval_policy_of,
)
from experiments.notifications import webhook as notification_webhook
from experiments.selectors import notifications as notification_selectors
from experiments.selectors import workspaces as workspace_selectors
from experiments.selectors.workspaces import WorkspaceAccess
from experiments.services import workspaces as workspace_services
from experiments.views.helpers import get_workspace_access

TEMPLATE = "experiments/workspace_settings.html"
MSG_SAVED = "Settings saved: {changes}."
MSG_UNCHANGED = "Nothing changed."
# The line under each choice of the approval policy.
APPROVAL_EXPLAINED = {
    ApprovalPolicy.NEVER: "One concluder's press of Force conclude or Record the decision is sent at once.",
    ApprovalPolicy.RISKY: (
        "A press becomes a request only when it is risky: a conclusion before the planned length, with a "
        "sample-ratio warning, or after the plan changed since it was sealed; a decision for those reasons, "
        "or one that ships a variant the results show as worse than control. The dialog says which rule applies."
    ),
    ApprovalPolicy.ALWAYS: "Every press of Force conclude or Record the decision becomes a request.",
}


def _page_context(request: HttpRequest, access: WorkspaceAccess, form: WorkspaceSettingsForm) -> dict[str, Any]:
    workspace = access.workspace
    sealed = workspace.webhook_url_sealed
    return {
        "access": access,
        "workspace": workspace,
        "form": form,
        "webhook_hint": workspace.webhook_url_hint if sealed else "",
        "webhook_unreadable": bool(sealed) and not notification_webhook.webhook_readable(sealed),
        "links_are_paths": not settings.DESK_BASE_URL,
        "window_min": APPROVAL_WINDOW_MIN_HOURS,
        "window_max": APPROVAL_WINDOW_MAX_HOURS,
        # Approval still applies until then: an admin turned it off, and the delay is not over.
        "approval_off_pending": workspace.approval_off_at if workspace.requires_approval else None,
        "approval_off_delay_hours": settings.APPROVAL_OFF_DELAY_HOURS,
        "approval_choices": [(value, label, APPROVAL_EXPLAINED[value]) for value, label in ApprovalPolicy.choices],
        "deliveries": notification_selectors.delivery_page(workspace=workspace, page=request.GET.get("page")),
        "setting_changes": notification_selectors.settings_change_list(workspace=workspace),
        # How many of the people concerned an email can reach: said while email is on.
        "email_reach": notification_selectors.email_reach(workspace=workspace) if workspace.email_bookmarkers else None,
    }


@sensitive_post_parameters("webhook_url")
@require_http_methods(["GET", "POST"])
def workspace_settings(request: HttpRequest, workspace_pk: int) -> HttpResponse:
    """GET: the settings and the latest deliveries. POST: save the settings, then back here."""
    access = get_workspace_access(request, workspace_pk)
    if not access.is_admin:
        raise PermissionDenied("Only a workspace admin may open its settings.")
    workspace = access.workspace
    current = workspace_selectors.workspace_settings_wanted(workspace=workspace)
    current["approval_policy"] = approval_policy_of(
        requires_approval=current["requires_approval"], approval_when=current["approval_when"]
    )
    form = WorkspaceSettingsForm(request.POST if request.method == "POST" else None, initial=current)
    if request.method == "POST" and form.is_valid():
        changes = workspace_services.workspace_settings_update(
            workspace=workspace, user=request.user, **form.cleaned_data
        )
        messages.success(request, MSG_SAVED.format(changes="; ".join(changes)) if changes else MSG_UNCHANGED)
        return redirect("experiments:workspace-settings", workspace_pk=workspace.pk)
    return render(request, TEMPLATE, _page_context(request, access, form))


@require_POST
def workspace_notification_test(request: HttpRequest, workspace_pk: int) -> HttpResponse:
    """Send a test message through the workspace's channels, then back to its settings."""
    access = get_workspace_access(request, workspace_pk)
    if not access.is_admin:
        raise PermissionDenied("Only a workspace admin may send a test message.")
    messages.info(request, workspace_services.notification_test_send(workspace=access.workspace, user=request.user))
    return redirect("experiments:workspace-settings", workspace_pk=access.workspace.pk)
