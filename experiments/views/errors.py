"""Our own error pages: plain words, a way back, and the request id to quote.

Wired in dashboard/urls.py (handler400 ... handler500) and CSRF_FAILURE_VIEW. The
page is drawn from a plain context (no context processors): when the database or
the session is what failed, drawing the page must not need them.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.template import loader
from django.urls import reverse

from experiments.api.problems import problem

# The API's errors are problem details, even those no API view answered (an unknown address).
API_PREFIX = "/api/"

# Readable answers, as constants so tests can match them.
PAGES = {
    400: (
        "That request could not be understood",
        ["Something in the address or the form was not what this page expects. Go back and try again."],
    ),
    403: (
        "You do not have access to this",
        ["Your account may not open this page or do this action. If you think it should, ask a workspace admin."],
    ),
    404: (
        "Page not found",
        [
            "There is nothing here, or it is in a workspace you are not a member of.",
            "Check the address, or start again from your workspaces.",
        ],
    ),
    500: (
        "Something went wrong on our side",
        [
            "The page could not be shown. Nothing you did caused this, and the problem has been logged.",
            "Try again in a minute. If you had just pressed Force conclude, check the experiment's audit "
            "trail before pressing again: the attempt is recorded there whatever happened.",
        ],
    ),
}
CSRF_PAGE = (
    "This form has expired",
    [
        "For your security the dashboard only accepts a form from a page it has just shown you, and this one "
        "could not be checked. This happens when a page has been open a long time, after logging in "
        "elsewhere, or when the browser blocks this site's cookies.",
        "Go back, reload the page, and try again. Nothing was changed.",
    ],
)


def error_page(request: HttpRequest, status: int, *, title: str, explanation: list[str]) -> HttpResponse:
    """An error page with the request's id, for any status; for the API, problem details."""
    if request.path.startswith(API_PREFIX):
        return problem(status, " ".join(explanation), title=title, request_id=getattr(request, "request_id", None))
    context = {
        "status": status,
        "title": title,
        "explanation": explanation,
        "request_id": getattr(request, "request_id", "unknown"),
        "back_url": reverse("home"),
        "back_label": "Back to your workspaces",
    }
    return HttpResponse(loader.render_to_string("errors/error.html", context), status=status)


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    title, explanation = PAGES[400]
    return error_page(request, 400, title=title, explanation=explanation)


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    title, explanation = PAGES[403]
    return error_page(request, 403, title=title, explanation=explanation)


def page_not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    title, explanation = PAGES[404]
    return error_page(request, 404, title=title, explanation=explanation)


def server_error(request: HttpRequest) -> HttpResponse:
    title, explanation = PAGES[500]
    return error_page(request, 500, title=title, explanation=explanation)


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    # The reason ("CSRF cookie not set", ...) is for developers; Django logs it.
    title, explanation = CSRF_PAGE
    return error_page(request, 403, title=title, explanation=explanation)
