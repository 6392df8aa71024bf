"""Sign-in screens: the password form, the SSO button and its callback, and the refusal pages."""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_not_required
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import SuspiciousOperation, ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET
from mozilla_django_oidc.views import OIDCAuthenticationCallbackView, OIDCAuthenticationRequestView

from experiments.signin import backends, challenge, oidc, recheck
from experiments.signin.addresses import client_address

logger = logging.getLogger(__name__)

MSG_LOCKED_OUT = (
    "Too many failed sign-in attempts. Signing in is paused for {minutes} minutes; try again after that. "
    "If you forgot your password, ask an admin of Experiment Desk."
)


def _signin_context() -> dict[str, Any]:
    return {"sso_enabled": oidc.is_configured(), "password_login": settings.PASSWORD_LOGIN}


class SignInForm(AuthenticationForm):
    """Django's password form, saying so when the refusal was the sign-in check, not the password."""

    def get_invalid_login_error(self) -> ValidationError:
        if getattr(self.request, "signin_challenge_unmet", False):
            return ValidationError(challenge.MSG_CHALLENGE, code="challenge")
        return super().get_invalid_login_error()


class PasswordLoginView(auth_views.LoginView):
    """Django's login view with our form, and the sign-in check when this address needs it."""

    template_name = "registration/login.html"
    redirect_authenticated_user = True
    form_class = SignInForm

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = {**super().get_context_data(**kwargs), **_signin_context()}
        if backends.address_challenged(self.request):
            context["challenge"] = challenge.challenge_issue(address=client_address(self.request))
        return context


@login_not_required
def password_login(request: HttpRequest) -> HttpResponse:
    """The password form; answers 404 when DJANGO_PASSWORD_LOGIN=0."""
    if not settings.PASSWORD_LOGIN:
        raise Http404("Password sign-in is switched off.")
    return PasswordLoginView.as_view()(request)


@login_not_required
@require_GET
def signin(request: HttpRequest) -> HttpResponse:
    """The sign-in page when password sign-in is off: the SSO button, or how to get in."""
    if request.user.is_authenticated:
        return redirect(settings.LOGIN_REDIRECT_URL)
    return render(request, "registration/login.html", {**_signin_context(), "next": request.GET.get("next", "")})


@login_not_required
def admin_login(request: HttpRequest) -> HttpResponse:
    """The admin's own password form, or the sign-in page when password sign-in is off or
    this address must pass the sign-in check."""
    # Only our form carries the sign-in check.
    if not settings.PASSWORD_LOGIN or backends.address_challenged(request):
        return redirect_to_login(request.GET.get("next") or reverse("admin:index"))
    return admin.site.login(request)


def locked_out(
    request: HttpRequest, original_response: HttpResponse | None = None, credentials: Any = None
) -> HttpResponse:
    """What django-axes answers while a username or address is cooling off: the same for every username."""
    minutes = round(settings.AXES_COOLOFF_TIME * 60)
    context = {**_signin_context(), "message": MSG_LOCKED_OUT.format(minutes=minutes)}
    return render(request, "registration/locked_out.html", context, status=429)


def _failed(request: HttpRequest, message: str, reason: str) -> HttpResponse:
    # The reason names the check that failed, never the token or the code.
    logger.warning("SSO sign-in failed from %s: %s", client_address(request) or "?", reason)
    return render(request, "registration/sso_failed.html", {**_signin_context(), "message": message}, status=400)


class SSOStartView(OIDCAuthenticationRequestView):
    """Sends the person to the identity provider (authorization code flow, state, nonce, PKCE)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # The library's __init__ reads a fixed endpoint from settings; ours comes from discovery.
        super(OIDCAuthenticationRequestView, self).__init__(*args, **kwargs)
        self.OIDC_RP_CLIENT_ID = settings.OIDC_CLIENT_ID

    def get(self, request: HttpRequest) -> HttpResponse:
        if not oidc.is_configured():
            raise Http404("Single sign-on is not configured.")
        try:
            self.OIDC_OP_AUTH_ENDPOINT = oidc.provider_config().authorization_endpoint
        except oidc.SignInFailed as exc:
            return _failed(request, str(exc), exc.reason)
        return super().get(request)


class SSOCallbackView(OIDCAuthenticationCallbackView):
    """Where the provider sends the person back; every failure is a readable page, never a 500."""

    def get(self, request: HttpRequest) -> HttpResponse:
        if not oidc.is_configured():
            raise Http404("Single sign-on is not configured.")
        try:
            return super().get(request)
        except oidc.SignInFailed as exc:
            return _failed(request, str(exc), exc.reason)
        except SuspiciousOperation:
            # The state is not one this session started: a replayed or stale callback.
            return _failed(request, oidc.MSG_STATE, "callback state unknown to this session")

    def login_success(self) -> HttpResponse:
        response = super().login_success()
        recheck.sso_session_start(self.request)
        return response

    def login_failure(self) -> HttpResponse:
        error = self.request.GET.get("error")
        if error:
            return _failed(self.request, oidc.MSG_DENIED, f"provider answered error={error[:100]!r}")
        return _failed(self.request, oidc.MSG_STATE, "callback without a sign-in started in this session")
