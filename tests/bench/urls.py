"""The real URLs plus /bench/hello/: the floor every page is compared with.

The hello-world view goes through exactly the same middleware as the real pages (session,
CSRF, login required, CSP, htmx), so a logged-in request pays the same session and user
lookups; what it does not pay is the page's own work.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.urls import path
from django.views.decorators.http import require_GET

from dashboard.urls import urlpatterns as real_urlpatterns


@require_GET
def hello(request: HttpRequest) -> HttpResponse:
    # Touch the user as every real page does (the lazy user object loads it on first use).
    return HttpResponse(f"Hello, {request.user.get_username()}", content_type="text/plain; charset=utf-8")


urlpatterns = [path("bench/hello/", hello, name="bench-hello"), *real_urlpatterns]
