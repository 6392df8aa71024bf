"""Request-time sign-in rules: the trusted proxy header, and the session's idle and absolute limits."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from django.conf import settings
from django.contrib import auth, messages
from django.contrib.auth.middleware import RemoteUserMiddleware
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from experiments.signin import recheck
from experiments.signin.addresses import from_trusted_proxy

logger = logging.getLogger(__name__)

# Session keys: when the person signed in, and when they were last seen (epoch seconds).
SIGNED_IN_AT = "desk_signed_in_at"
LAST_SEEN_AT = "desk_last_seen_at"
# last-seen is written at most this often, so an ordinary page does not rewrite the session.
LAST_SEEN_RESOLUTION = 60
MSG_SESSION_ENDED = "Your session ended. Please sign in again."
HEADER_BACKEND = "experiments.signin.backends.TrustedHeaderBackend"


class TrustedHeaderMiddleware(RemoteUserMiddleware):
    """Django's remote-user sign-in from DJANGO_TRUSTED_USER_HEADER, only from the trusted proxies.

    Off when no header is named. A request that carries the header from any other address
    is refused (403) and logged: it is someone trying to claim an identity. The groups
    header is followed on every request (experiments.signin.recheck).
    """

    force_logout_if_no_header = True

    def __init__(self, get_response: Callable) -> None:
        super().__init__(get_response)
        name = settings.TRUSTED_USER_HEADER
        self.header = "HTTP_" + name.upper().replace("-", "_") if name else ""

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not self.header:
            return self.get_response(request)
        if self.header in request.META and not from_trusted_proxy(request):
            logger.warning(
                "Refused a request carrying %s from %s, which is not a trusted proxy.",
                settings.TRUSTED_USER_HEADER,
                request.META.get("REMOTE_ADDR", "?"),
            )
            return render(request, "registration/header_refused.html", status=403)
        return super().__call__(request)

    def process_request(self, request: HttpRequest) -> None:
        super().process_request(request)
        # Signed in by this header (now or earlier in the session): the groups header is read
        # on every request, so a removal at the identity provider counts from the next one.
        if request.user.is_authenticated and request.session.get(auth.BACKEND_SESSION_KEY) == HEADER_BACKEND:
            recheck.proxy_groups_resync(request)


def session_start(request: HttpRequest) -> None:
    """Start a signed-in session's idle and absolute clocks."""
    now = time.time()
    request.session[SIGNED_IN_AT] = now
    request.session[LAST_SEEN_AT] = now


def stamp_session_on_login(sender: object, request: HttpRequest | None, **kwargs: object) -> None:
    """user_logged_in receiver: every way of signing in starts the session's clocks."""
    if request is not None and hasattr(request, "session"):
        session_start(request)


class _SignedInViewMiddleware:
    """A middleware with work to do only for a signed-in person going to a view that needs one:
    public views (sign-in pages, probes) neither need the person nor load the session for them."""

    def __init__(self, get_response: Callable) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_view(
        self, request: HttpRequest, view_func: Callable, view_args: object, view_kwargs: object
    ) -> HttpResponse | None:
        if not getattr(view_func, "login_required", True) or not request.user.is_authenticated:
            return None
        return self.signed_in_view(request)

    def signed_in_view(self, request: HttpRequest) -> HttpResponse | None:
        raise NotImplementedError


class SessionTimeoutMiddleware(_SignedInViewMiddleware):
    """Ends a signed-in session after SESSION_IDLE_TIMEOUT without a request, or
    SESSION_ABSOLUTE_TIMEOUT after sign-in. Logging out deletes the session row (and its
    cached copy), so the end holds on every server."""

    def signed_in_view(self, request: HttpRequest) -> HttpResponse | None:
        now = time.time()
        session = request.session
        if SIGNED_IN_AT not in session:
            session_start(request)  # a session from before these limits existed
        signed_in, last_seen = session[SIGNED_IN_AT], session.get(LAST_SEEN_AT, now)
        if now - signed_in > settings.SESSION_ABSOLUTE_TIMEOUT or now - last_seen > settings.SESSION_IDLE_TIMEOUT:
            auth.logout(request)
            messages.info(request, MSG_SESSION_ENDED)
            return redirect(settings.LOGIN_URL)
        if now - last_seen >= LAST_SEEN_RESOLUTION:
            session[LAST_SEEN_AT] = now
        return None


class SSORecheckMiddleware(_SignedInViewMiddleware):
    """Re-checks an SSO session with the identity provider when it is due
    (experiments.signin.recheck): the roles follow the person's groups, and a session the
    provider no longer confirms ends, with the same message on every server."""

    def signed_in_view(self, request: HttpRequest) -> HttpResponse | None:
        if not recheck.sso_recheck_due(request) or recheck.sso_recheck(request):
            return None
        auth.logout(request)
        messages.info(request, recheck.MSG_SSO_RECHECK_FAILED)
        return redirect(settings.LOGIN_URL)
