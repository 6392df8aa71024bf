"""The access checks every workspace view starts with (404 for outsiders)."""

from __future__ import annotations

from django.http import Http404, HttpRequest

from experiments.selectors import workspaces as workspace_selectors
from experiments.selectors.workspaces import WorkspaceAccess


def get_workspace_access(request: HttpRequest, workspace_pk: int) -> WorkspaceAccess:
    """The workspace and the user's role in it; 404 when the user is not a member.

    404 rather than 403 so an outsider cannot learn which workspaces exist.
    """
    access = workspace_selectors.workspace_access(user=request.user, workspace_pk=workspace_pk)
    if access is None:
        raise Http404("No such workspace.")
    return access
