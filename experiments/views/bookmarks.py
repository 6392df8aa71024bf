"""Team bookmarks: the Bookmarks page, and adding, editing and removing.

Every view starts with the workspace access check (404 for outsiders). The rules
(what may be bookmarked, who may change one) are the bookmark service's, which
answers with an outcome: a refusal to change someone else's bookmark is a 403, any
other answer is the changed fragment for htmx or, without JavaScript, a redirect
back (to a safe local `next`) with the outcome as a message.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import trigger_client_event

from experiments.mixpanel import client as mixpanel
from experiments.models import Bookmark, BookmarkKind
from experiments.selectors import bookmarks as bookmark_selectors
from experiments.selectors.bookmarks import BookmarkItem
from experiments.selectors.workspaces import WorkspaceAccess
from experiments.services import bookmarks as bookmark_services
from experiments.services.bookmarks import REFUSED_GONE, REFUSED_NOT_ALLOWED, BookmarkOutcome
from experiments.views.helpers import get_workspace_access

TEMPLATE = "experiments/bookmark_list.html"


def _next_url(request: HttpRequest) -> str:
    """The local page the POST came from, or "" when absent or not safely ours."""
    candidate = request.POST.get("next", "")
    if candidate.startswith("/") and url_has_allowed_host_and_scheme(
        candidate, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return candidate
    return ""


def _back(request: HttpRequest, access: WorkspaceAccess, outcome: BookmarkOutcome) -> HttpResponseRedirect:
    """Without JavaScript: the outcome as a message, and back where the form was."""
    (messages.success if outcome.ok else messages.error)(request, outcome.message)
    return HttpResponseRedirect(_next_url(request) or reverse("experiments:bookmark-list", args=[access.workspace.pk]))


def _fragment(request: HttpRequest, partial: str, context: dict[str, Any]) -> str:
    return render_to_string(f"{TEMPLATE}#{partial}", context, request=request)


def _answer(html: str, outcome: BookmarkOutcome) -> HttpResponse:
    """An htmx answer; a change that was made also says so in a toast."""
    response = HttpResponse(html)
    if outcome.ok:
        trigger_client_event(response, "showToast", {"message": outcome.message})
    return response


def _client_factory(access: WorkspaceAccess) -> Callable[[], Any]:
    # Through the module attribute (the seam tests replace), and only if the cache cannot answer.
    return lambda: mixpanel.client_for(access.workspace)


def _items(request: HttpRequest, access: WorkspaceAccess, bookmarks: list[Bookmark]) -> list[BookmarkItem]:
    def may_change(bookmark: Bookmark) -> bool:
        return bookmark_services.bookmark_may_change(bookmark=bookmark, user=request.user, is_admin=access.is_admin)

    return bookmark_selectors.bookmark_items(
        bookmarks=bookmarks,
        experiments_by_id=bookmark_selectors.experiments_by_id(
            snapshot=bookmark_selectors.experiment_list_peek(workspace=access.workspace)
        ),
        may_change=may_change,
    )


def _page_context(request: HttpRequest, access: WorkspaceAccess) -> dict[str, Any]:
    return {
        "access": access,
        "workspace": access.workspace,
        "items": _items(request, access, bookmark_selectors.bookmark_list_for_workspace(workspace=access.workspace)),
        "activity": bookmark_selectors.bookmark_activity(workspace=access.workspace),
        "snapshot": bookmark_selectors.experiment_list_peek(workspace=access.workspace),
        "bookmark_next": reverse("experiments:bookmark-list", args=[access.workspace.pk]),
    }


def _forbidden(request: HttpRequest, access: WorkspaceAccess, outcome: BookmarkOutcome) -> HttpResponse:
    """403 with the reason: a toast for htmx (which does not swap 4xx), the page otherwise."""
    if request.htmx:
        response = HttpResponse(outcome.message, status=403, content_type="text/plain; charset=utf-8")
        return trigger_client_event(response, "showToast", {"message": outcome.message})
    context = _page_context(request, access) | {"denied_message": outcome.message}
    return render(request, TEMPLATE, context, status=403)


def _bookmark_or_404(access: WorkspaceAccess, bookmark_pk: int) -> Bookmark:
    bookmark = bookmark_selectors.bookmark_get(workspace=access.workspace, pk=bookmark_pk)
    if bookmark is None:
        raise Http404("No such bookmark.")
    return bookmark


def _strip_html(request: HttpRequest, access: WorkspaceAccess) -> str:
    """The experiments page's bookmark strip, as an out-of-band swap, when the form came from that page."""
    if request.POST.get("strip") != "1":
        return ""
    strip = bookmark_selectors.bookmark_strip(
        access=access, snapshot=bookmark_selectors.experiment_list_peek(workspace=access.workspace)
    )
    return _fragment(request, "bookmark-strip", {"workspace": access.workspace, "bookmark_strip": strip, "oob": True})


def _star_response(
    request: HttpRequest, access: WorkspaceAccess, experiment_id: str, outcome: BookmarkOutcome
) -> HttpResponse:
    """The star as it now stands (htmx), or a redirect with the outcome as a message."""
    if not request.htmx:
        return _back(request, access, outcome)
    name = (outcome.bookmark.experiment_name if outcome.bookmark else "") or experiment_id
    context = {
        "workspace": access.workspace,
        "experiment": {"id": experiment_id, "name": name},
        "starred": {experiment_id} if outcome.starred else set(),
        "with_strip": request.POST.get("strip") == "1",
        "bookmark_next": _next_url(request),
        "star_error": "" if outcome.ok else outcome.message,
    }
    return _answer(_fragment(request, "star-toggle", context) + _strip_html(request, access), outcome)


def _view_form_response(request: HttpRequest, access: WorkspaceAccess, outcome: BookmarkOutcome) -> HttpResponse:
    if not request.htmx:
        return _back(request, access, outcome)
    # After a success the form is empty again; after a refusal it keeps what was typed.
    context = {
        "workspace": access.workspace,
        "current_view_query": request.POST.get("query", ""),
        "show_query_field": request.POST.get("from_location") != "1",
        "with_strip": request.POST.get("strip") == "1",
        "bookmark_next": _next_url(request),
        "view_form": {} if outcome.ok else {k: request.POST.get(k, "") for k in ("query", "title", "note")},
        "view_form_error": "" if outcome.ok else outcome.message,
        "view_form_message": outcome.message if outcome.ok else "",
    }
    html = _fragment(request, "bookmark-view-form", context) + (_strip_html(request, access) if outcome.ok else "")
    return _answer(html, outcome)


def _submitted_view_query(request: HttpRequest) -> str:
    # htmx swaps the experiments table and pushes its URL without re-rendering this
    # form, so the browser's current location is the view on screen; the hidden
    # field is right for no-JS posts. Both go through the same validation.
    if request.POST.get("from_location") == "1" and request.htmx and request.htmx.current_url_abs_path:
        return request.htmx.current_url_abs_path
    return request.POST.get("query", "")


@require_GET
def bookmark_list(request: HttpRequest, workspace_pk: int) -> HttpResponse:
    """The workspace's bookmarks, newest first, with recent bookmark activity."""
    access = get_workspace_access(request, workspace_pk)
    return render(request, TEMPLATE, _page_context(request, access))


@require_POST
def bookmark_create(request: HttpRequest, workspace_pk: int) -> HttpResponse:
    """Add a bookmark: kind "experiment" (by experiment_id) or "view" (a query of the experiments page)."""
    access = get_workspace_access(request, workspace_pk)
    if request.POST.get("kind") == BookmarkKind.EXPERIMENT:
        experiment_id = request.POST.get("experiment_id", "").strip()
        outcome = bookmark_services.bookmark_star(
            workspace=access.workspace,
            user=request.user,
            experiment_id=experiment_id,
            client_factory=_client_factory(access),
            note=request.POST.get("note", ""),
        )
        return _star_response(request, access, experiment_id, outcome)
    outcome = bookmark_services.bookmark_create_view(
        workspace=access.workspace,
        user=request.user,
        query=_submitted_view_query(request),
        title=request.POST.get("title", ""),
        note=request.POST.get("note", ""),
    )
    return _view_form_response(request, access, outcome)


@require_POST
def bookmark_update(request: HttpRequest, workspace_pk: int, bookmark_pk: int) -> HttpResponse:
    """Edit a bookmark's note and title (whoever added it or a workspace admin)."""
    access = get_workspace_access(request, workspace_pk)
    bookmark = _bookmark_or_404(access, bookmark_pk)
    outcome = bookmark_services.bookmark_update(
        bookmark=bookmark,
        user=request.user,
        note=request.POST.get("note", ""),
        title=request.POST.get("title"),
        is_admin=access.is_admin,
    )
    if outcome.refusal == REFUSED_NOT_ALLOWED:
        return _forbidden(request, access, outcome)
    if not request.htmx:
        return _back(request, access, outcome)
    if outcome.refusal == REFUSED_GONE:
        return trigger_client_event(HttpResponse(""), "showToast", {"message": outcome.message})
    [item] = _items(request, access, [bookmark])
    context = {"workspace": access.workspace, "item": item, "bookmark_next": _next_url(request)}
    if not outcome.ok:
        # What was typed stays in the open form, next to the reason it was refused.
        edit = {"title": request.POST.get("title", bookmark.title), "note": request.POST.get("note", "")}
        context.update(edit=edit, edit_open=True, item_error=outcome.message)
    return _answer(_fragment(request, "bookmark-item", context), outcome)


@require_POST
def bookmark_delete(request: HttpRequest, workspace_pk: int, bookmark_pk: int) -> HttpResponse:
    """Remove a bookmark (whoever added it or a workspace admin); htmx gets an empty fragment."""
    access = get_workspace_access(request, workspace_pk)
    bookmark = _bookmark_or_404(access, bookmark_pk)
    outcome = bookmark_services.bookmark_delete(bookmark=bookmark, user=request.user, is_admin=access.is_admin)
    if outcome.refusal == REFUSED_NOT_ALLOWED:
        return _forbidden(request, access, outcome)
    if not request.htmx:
        return _back(request, access, outcome)
    # The item is swapped for nothing; the strip follows when the form came from the experiments page.
    return trigger_client_event(HttpResponse(_strip_html(request, access)), "showToast", {"message": outcome.message})


@require_POST
def bookmark_toggle(request: HttpRequest, workspace_pk: int, experiment_id: str) -> HttpResponse:
    """The star on an experiment: add the team bookmark if absent, remove it if present (when allowed)."""
    access = get_workspace_access(request, workspace_pk)
    outcome = bookmark_services.bookmark_toggle(
        workspace=access.workspace,
        user=request.user,
        experiment_id=experiment_id,
        client_factory=_client_factory(access),
        is_admin=access.is_admin,
        note=request.POST.get("note", ""),
    )
    if outcome.refusal == REFUSED_NOT_ALLOWED:
        return _forbidden(request, access, outcome)
    return _star_response(request, access, experiment_id, outcome)
