"""The project's URLs plus views that fail on purpose, for error page and error log tests."""

from __future__ import annotations

from django.contrib.auth.decorators import login_not_required
from django.core.exceptions import PermissionDenied, SuspiciousOperation
from django.http import HttpRequest, HttpResponse
from django.urls import path

from dashboard.urls import handler400, handler403, handler404, handler500
from dashboard.urls import urlpatterns as project_urls

__all__ = ["handler400", "handler403", "handler404", "handler500", "urlpatterns"]


@login_not_required
def boom(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("a bug")


@login_not_required
def forbidden(request: HttpRequest) -> HttpResponse:
    raise PermissionDenied


@login_not_required
def bad(request: HttpRequest) -> HttpResponse:
    raise SuspiciousOperation("odd input")


urlpatterns = [
    path("boom/", boom),
    path("forbidden/", forbidden),
    path("bad/", bad),
    *project_urls,
]
