"""Response headers every answer of the dashboard carries."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponseBase
from django.utils.cache import patch_cache_control, patch_vary_headers


class PrivateResponsesMiddleware:
    """No cache keeps an answer of ours, and a page and its htmx fragment never stand in for each other.

    Every page shows one person's view of experiments and audit trails and carries a
    CSRF token, so `Cache-Control: no-store, private` keeps it out of shared caches and
    off the disk (the browser asks again on Back; htmx's history restore does too).
    Any of our URLs may answer a whole page or, to an htmx request, a fragment of it:
    `Vary: HX-Request` keeps a cache from handing one for the other. Both go on every
    answer rather than on chosen views, so a new view cannot forget them.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        response = self.get_response(request)
        patch_cache_control(response, no_store=True, private=True)
        patch_vary_headers(response, ("HX-Request",))
        return response
