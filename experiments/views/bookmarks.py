"""Team bookmarks: the Bookmarks page, and adding, editing and removing.

Every view starts with the workspace access check (404 for outsiders). htmx
requests get the changed fragment back; without JavaScript a POST redirects
back (to a safe local `next`) with a message.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import trigger_client_event

from experiments import mixpanel
from experiments.models import Bookmark, BookmarkKind
from experiments.selectors import bookmarks as bookmark_selectors
from experiments.selectors import experiment_list as list_selectors
from experiments.selectors.workspaces import WorkspaceAccess
from experiments.services import bookmarks as bookmark_services
from experiments.views.access import get_workspace_access

TEMPLATE = "experiments/bookmark_list.html"
EXPERIMENT_UNKNOWN = "This workspace's experiment list has no experiment with that id, so it cannot be bookmarked."
EXPERIMENT_UNCHECKED = "The experiment could not be checked against Mixpanel, so it was not bookmarked: {error}"


def _next_url(request: HttpRequest) -> str:
    """The local page the POST came from, or "" when absent or not safely ours."""
    candidate = request.POST.get("next", "")
    if candidate.startswith("/") and url_has_allowed_host_and_scheme(
        candidate, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return candidate
    return ""


def _back(request: HttpRequest, access: WorkspaceAccess) -> HttpResponseRedirect:
    return HttpResponseRedirect(_next_url(request) or reverse("experiments:bookmark-list", args=[access.workspace.pk]))


def _fragment(request: HttpRequest, partial: str, context: dict[str, Any]) -> str:
    return render_to_string(f"{TEMPLATE}#{partial}", context, request=request)


def _toast(response: HttpResponse, message: str) -> HttpResponse:
    return trigger_client_event(response, "showToast", {"message": message})


def _page_context(request: HttpRequest, access: WorkspaceAccess) -> dict[str, Any]:
    snapshot = bookmark_selectors.experiment_list_peek(workspace=access.workspace)
    items = bookmark_selectors.bookmark_items(
        bookmarks=bookmark_selectors.bookmark_list_for_workspace(workspace=access.workspace),
        experiments_by_id=bookmark_selectors.experiments_by_id(snapshot=snapshot),
        user=request.user,
        is_admin=access.is_admin,
    )
    return {
        "access": access,
        "workspace": access.workspace,
        "items": items,
        "activity": bookmark_selectors.bookmark_activity(workspace=access.workspace),
        "snapshot": snapshot,
        "bookmark_next": reverse("experiments:bookmark-list", args=[access.workspace.pk]),
    }


def _forbidden(
    request: HttpRequest, access: WorkspaceAccess, exc: bookmark_services.BookmarkNotAllowed
) -> HttpResponse:
    """403 with the reason: a toast for htmx (which does not swap 4xx), the page otherwise."""
    if request.htmx:
        response = HttpResponse(str(exc), status=403, content_type="text/plain; charset=utf-8")
        return _toast(response, str(exc))
    context = _page_context(request, access) | {"denied_message": str(exc)}
    return render(request, TEMPLATE, context, status=403)


def _item_context(request: HttpRequest, access: WorkspaceAccess, bookmark: Bookmark, **extra: Any) -> dict[str, Any]:
    [item] = bookmark_selectors.bookmark_items(
        bookmarks=[bookmark],
        experiments_by_id=bookmark_selectors.experiments_by_id(
            snapshot=bookmark_selectors.experiment_list_peek(workspace=access.workspace)
        ),
        user=request.user,
        is_admin=access.is_admin,
    )
    return {"workspace": access.workspace, "item": item, "bookmark_next": _next_url(request)} | extra


def _strip_html(request: HttpRequest, access: WorkspaceAccess) -> str:
    """The experiments page's bookmark strip, as an out-of-band swap, when the form came from that page."""
    if request.POST.get("strip") != "1":
        return ""
    strip = bookmark_selectors.bookmark_strip(
        access=access,
        user=request.user,
        snapshot=bookmark_selectors.experiment_list_peek(workspace=access.workspace),
    )
    return _fragment(request, "bookmark-strip", {"workspace": access.workspace, "bookmark_strip": strip, "oob": True})


@require_GET
def bookmark_list(request: HttpRequest, workspace_pk: int) -> HttpResponse:
    """The workspace's bookmarks, newest first, with recent bookmark activity."""
    access = get_workspace_access(request, workspace_pk)
    return render(request, TEMPLATE, _page_context(request, access))


def _experiment_to_bookmark(access: WorkspaceAccess, experiment_id: str) -> mixpanel.Experiment:
    """The experiment from the workspace's list; only listed experiments can be bookmarked."""
    try:
        experiment = bookmark_selectors.experiment_for_bookmark(
            workspace=access.workspace,
            experiment_id=experiment_id,
            # Through the module attribute (the seam tests replace), and only if the cache cannot answer.
            client_factory=lambda: mixpanel.client_for(access.workspace),
        )
    except (list_selectors.ExperimentListUnavailable, mixpanel.MixpanelError) as exc:
        raise bookmark_services.BookmarkInvalid(EXPERIMENT_UNCHECKED.format(error=exc)) from None
    if experiment is None:
        raise bookmark_services.BookmarkInvalid(EXPERIMENT_UNKNOWN)
    return experiment


def _star_response(
    request: HttpRequest,
    access: WorkspaceAccess,
    *,
    experiment_id: str,
    name: str,
    message: str,
    starred: bool = False,
    ok: bool = False,
) -> HttpResponse:
    if not request.htmx:
        (messages.success if ok else messages.error)(request, message)
        return _back(request, access)
    context = {
        "workspace": access.workspace,
        "experiment": {"id": experiment_id, "name": name},
        "starred": {experiment_id} if starred else set(),
        "with_strip": request.POST.get("strip") == "1",
        "bookmark_next": _next_url(request),
        "star_error": "" if ok else message,
    }
    html = _fragment(request, "star-toggle", context) + _strip_html(request, access)
    return _toast(HttpResponse(html), message) if ok else HttpResponse(html)


def _view_form_response(request: HttpRequest, access: WorkspaceAccess, *, message: str, ok: bool) -> HttpResponse:
    if not request.htmx:
        (messages.success if ok else messages.error)(request, message)
        return _back(request, access)
    # After a success the form is empty again; after a refusal it keeps what was typed.
    context = {
        "workspace": access.workspace,
        "current_view_query": request.POST.get("query", ""),
        "show_query_field": request.POST.get("from_location") != "1",
        "with_strip": request.POST.get("strip") == "1",
        "bookmark_next": _next_url(request),
        "view_form": {} if ok else {k: request.POST.get(k, "") for k in ("query", "title", "note")},
        "view_form_error": "" if ok else message,
        "view_form_message": message if ok else "",
    }
    html = _fragment(request, "bookmark-view-form", context) + (_strip_html(request, access) if ok else "")
    return _toast(HttpResponse(html), message) if ok else HttpResponse(html)


def _submitted_view_query(request: HttpRequest) -> str:
    # htmx swaps the experiments table and pushes its URL without re-rendering this
    # form, so the browser's current location is the view on screen; the hidden
    # field is right for no-JS posts. Both go through the same validation.
    if request.POST.get("from_location") == "1" and request.htmx and request.htmx.current_url_abs_path:
        return request.htmx.current_url_abs_path
    return request.POST.get("query", "")


def _star_add(request: HttpRequest, access: WorkspaceAccess, experiment_id: str, note: str = "") -> HttpResponse:
    """Bookmark one listed experiment and answer with its star (htmx) or a redirect."""
    try:
        experiment = _experiment_to_bookmark(access, experiment_id)
        bookmark_services.bookmark_create_experiment(
            workspace=access.workspace,
            user=request.user,
            experiment_id=experiment.id,
            experiment_name=experiment.name,
            note=note,
        )
    except bookmark_services.BookmarkExists as exc:
        # Someone else just added it: the star is on, and the message says who.
        name = exc.existing.experiment_name or experiment_id
        return _star_response(request, access, experiment_id=experiment_id, name=name, starred=True, message=str(exc))
    except bookmark_services.BookmarkError as exc:
        return _star_response(request, access, experiment_id=experiment_id, name=experiment_id, message=str(exc))
    return _star_response(
        request,
        access,
        experiment_id=experiment.id,
        name=experiment.name,
        starred=True,
        message=f"Bookmarked “{experiment.name or experiment.id}” for the team.",
        ok=True,
    )


@require_POST
def bookmark_create(request: HttpRequest, workspace_pk: int) -> HttpResponse:
    """Add a bookmark: kind "experiment" (by experiment_id) or "view" (a query of the experiments page)."""
    access = get_workspace_access(request, workspace_pk)
    if request.POST.get("kind") == BookmarkKind.EXPERIMENT:
        return _star_add(request, access, request.POST.get("experiment_id", "").strip(), request.POST.get("note", ""))
    try:
        bookmark = bookmark_services.bookmark_create_view(
            workspace=access.workspace,
            user=request.user,
            query=_submitted_view_query(request),
            title=request.POST.get("title", ""),
            note=request.POST.get("note", ""),
        )
    except bookmark_services.BookmarkError as exc:
        return _view_form_response(request, access, message=str(exc), ok=False)
    return _view_form_response(
        request, access, message=f"Bookmarked the view “{bookmark.title}” for the team.", ok=True
    )


@require_POST
def bookmark_update(request: HttpRequest, workspace_pk: int, bookmark_pk: int) -> HttpResponse:
    """Edit a bookmark's note and title (its creator or a workspace admin)."""
    access = get_workspace_access(request, workspace_pk)
    bookmark = bookmark_selectors.bookmark_get(workspace=access.workspace, pk=bookmark_pk)
    try:
        bookmark_services.bookmark_update(
            bookmark=bookmark,
            user=request.user,
            note=request.POST.get("note", ""),
            title=request.POST.get("title"),
        )
    except bookmark_services.BookmarkNotAllowed as exc:
        return _forbidden(request, access, exc)
    except bookmark_services.BookmarkGone as exc:
        if not request.htmx:
            messages.error(request, str(exc))
            return _back(request, access)
        return _toast(HttpResponse(""), str(exc))
    except bookmark_services.BookmarkInvalid as exc:
        if not request.htmx:
            messages.error(request, str(exc))
            return _back(request, access)
        edit = {"title": request.POST.get("title", bookmark.title), "note": request.POST.get("note", "")}
        bookmark.refresh_from_db(fields=["title", "note"])
        context = _item_context(request, access, bookmark, edit=edit, edit_open=True, item_error=str(exc))
        return HttpResponse(_fragment(request, "bookmark-item", context))
    if not request.htmx:
        messages.success(request, "Bookmark saved.")
        return _back(request, access)
    return _toast(
        HttpResponse(_fragment(request, "bookmark-item", _item_context(request, access, bookmark))), "Bookmark saved."
    )


@require_POST
def bookmark_delete(request: HttpRequest, workspace_pk: int, bookmark_pk: int) -> HttpResponse:
    """Remove a bookmark (its creator or a workspace admin); htmx gets an empty fragment."""
    access = get_workspace_access(request, workspace_pk)
    bookmark = bookmark_selectors.bookmark_get(workspace=access.workspace, pk=bookmark_pk)
    label = str(bookmark)
    try:
        bookmark_services.bookmark_delete(bookmark=bookmark, user=request.user)
    except bookmark_services.BookmarkNotAllowed as exc:
        return _forbidden(request, access, exc)
    except bookmark_services.BookmarkGone as exc:
        label, message = "", str(exc)
    else:
        message = f"Removed the bookmark “{label}”."
    if not request.htmx:
        (messages.success if label else messages.info)(request, message)
        return _back(request, access)
    # The item is swapped for nothing; the strip follows when the form came from the experiments page.
    return _toast(HttpResponse(_strip_html(request, access)), message)


@require_POST
def bookmark_toggle(request: HttpRequest, workspace_pk: int, experiment_id: str) -> HttpResponse:
    """The star on an experiment: add the team bookmark if absent, remove it if present (when allowed)."""
    access = get_workspace_access(request, workspace_pk)
    existing = bookmark_selectors.bookmark_for_experiment(workspace=access.workspace, experiment_id=experiment_id)
    if existing is not None:
        name = existing.experiment_name or experiment_id
        try:
            bookmark_services.bookmark_delete(bookmark=existing, user=request.user)
        except bookmark_services.BookmarkNotAllowed as exc:
            return _forbidden(request, access, exc)
        except bookmark_services.BookmarkGone:
            pass  # someone removed it a moment ago: the outcome the person wanted
        return _star_response(
            request,
            access,
            experiment_id=experiment_id,
            name=name,
            starred=False,
            message=f"Removed the bookmark on “{name}”.",
            ok=True,
        )
    return _star_add(request, access, experiment_id)
