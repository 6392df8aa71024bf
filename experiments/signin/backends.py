"""Authentication backends: the password throttle, OpenID Connect, and the trusted proxy header."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from axes.backends import AxesStandaloneBackend
from axes.handlers.database import AxesDatabaseHandler
from axes.helpers import get_client_username, get_cool_off
from axes.models import AccessAttempt
from axes.signals import user_locked_out
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend, RemoteUserBackend
from django.core.exceptions import PermissionDenied
from django.db.models import Sum
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from mozilla_django_oidc.auth import OIDCAuthenticationBackend
from mozilla_django_oidc.utils import absolutify

from experiments.services import roles as role_services
from experiments.services import signin as signin_services
from experiments.signin import challenge, oidc
from experiments.signin.addresses import client_address

logger = logging.getLogger(__name__)

PROXY_ISSUER = "trusted-proxy-header"


# Django usernames are at most 150 characters, so a longer one names no account. Axes
# stores the posted username in a 255-character column, which PostgreSQL enforces: cut
# it here so any posted value is counted as a failure instead of failing the request.
THROTTLE_USERNAME_MAX = 150


def throttle_username(request: HttpRequest | None, credentials: dict | None = None) -> str | None:
    """The username axes counts failures under: as posted, cut to a length any account can have."""
    source = credentials or (request.POST if request is not None else {})
    username = source.get("username")
    if not isinstance(username, str):
        return None
    return username[:THROTTLE_USERNAME_MAX]


def _failures(request: HttpRequest, **match: str) -> int:
    """Failed password attempts matching `match` within the cool-off window."""
    since = timezone.now() - get_cool_off(request)
    attempts = AccessAttempt.objects.filter(attempt_time__gte=since, **match)
    return attempts.aggregate(n=Sum("failures_since_start"))["n"] or 0


def address_challenged(request: HttpRequest) -> bool:
    """Whether password attempts from this request's client address must pass the sign-in check:
    DJANGO_LOGIN_ADDRESS_LIMIT failures from it within the cool-off window."""
    return _failures(request, ip_address=client_address(request)) >= settings.LOGIN_ADDRESS_LIMIT


class ThrottleBackend(AxesStandaloneBackend):
    """Refuses a password sign-in while its username, or its username from this address, is
    locked out, and one from a busy address that did not pass the sign-in check.

    Only password attempts are throttled: SSO and the proxy header have no password to
    guess. Calls without a request (the test client's login(), scripts) are not web
    sign-ins and pass through.
    """

    def authenticate(
        self, request: HttpRequest | None, username: str | None = None, password: str | None = None, **kwargs: Any
    ) -> None:
        if request is None or password is None:
            return None
        super().authenticate(request, username=username, password=password, **kwargs)
        if address_challenged(request) and not challenge.challenge_passed(
            request=request, address=client_address(request)
        ):
            request.signin_challenge_unmet = True
            raise PermissionDenied(challenge.MSG_CHALLENGE)
        return None


class ThrottleHandler(AxesDatabaseHandler):
    """django-axes with two lock-outs and a check.

    Axes counts failures per username and address (AXES_LOCKOUT_PARAMETERS) and locks that
    pair at AXES_FAILURE_LIMIT; this handler adds the per-username count over the same
    attempt rows (LOGIN_USERNAME_LIMIT, from every address together). The count per address
    locks nobody out: past LOGIN_ADDRESS_LIMIT it asks for the sign-in check
    (experiments.signin.challenge), because behind a NAT or proxy that address is everyone's.
    Failures for unknown usernames are counted exactly like those for known ones.
    """

    def _username_failures(self, request: HttpRequest, credentials: dict | None) -> int:
        username = get_client_username(request, credentials)
        return _failures(request, username=username) if username else 0

    def is_locked(self, request: HttpRequest, credentials: dict | None = None) -> bool:
        if super().is_locked(request, credentials):
            return True
        return self._username_failures(request, credentials) >= settings.LOGIN_USERNAME_LIMIT

    def user_login_failed(
        self, sender: Any, credentials: dict, request: HttpRequest | None = None, **kwargs: Any
    ) -> None:
        if "password" not in (credentials or {}):
            return  # not a password attempt (a failed SSO callback): nothing to guess, nothing to count
        if getattr(request, "signin_challenge_unmet", False):
            return  # refused before any password was checked
        super().user_login_failed(sender, credentials, request, **kwargs)
        if request is None or getattr(request, "axes_locked_out", False):
            return
        if self._username_failures(request, credentials) >= settings.LOGIN_USERNAME_LIMIT:
            request.axes_locked_out = True
            request.axes_credentials = credentials
            username = get_client_username(request, credentials)
            user_locked_out.send("axes", request=request, username=username, ip_address=request.axes_ip_address)


@dataclass(frozen=True, slots=True)
class SSOGrant:
    """What an SSO sign-in leaves for re-checking the session: the refresh token ("" when the
    provider gave none), when the ID token expires (epoch seconds), and its nonce."""

    refresh_token: str = field(repr=False)
    expires_at: float
    nonce: str


class OIDCBackend(OIDCAuthenticationBackend):
    """OpenID Connect sign-in with mozilla-django-oidc's code flow, checked and mapped our way.

    The library exchanges the code; the ID token is then verified by experiments.signin.oidc
    (the library alone checks neither issuer nor audience), the user is found by
    (issuer, sub), and the person's roles are brought in line with their groups.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # The library's own __init__ wants every endpoint in settings; ours come from discovery.
        self.UserModel = get_user_model()

    def get_user(self, user_id: int) -> Any:
        # The library's get_user forgets is_active; a deactivated person's session must end.
        return ModelBackend.get_user(self, user_id)

    def authenticate(self, request: HttpRequest | None, **kwargs: Any) -> Any:
        if request is None or "nonce" not in kwargs or not oidc.is_configured():
            return None  # not an SSO callback
        code, state = request.GET.get("code"), request.GET.get("state")
        if not code or not state:
            return None
        self.request = request
        config = oidc.provider_config()
        self.OIDC_OP_TOKEN_ENDPOINT = config.token_endpoint
        self.OIDC_RP_CLIENT_ID = settings.OIDC_CLIENT_ID
        self.OIDC_RP_CLIENT_SECRET = oidc.client_secret()
        payload = {
            "client_id": settings.OIDC_CLIENT_ID,
            "client_secret": self.OIDC_RP_CLIENT_SECRET,
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": absolutify(request, reverse("oidc_authentication_callback")),
        }
        if kwargs.get("code_verifier"):
            payload["code_verifier"] = kwargs["code_verifier"]
        try:
            token_info = self.get_token(payload)
        except Exception as exc:  # requests errors and the library's HTTPError with the answer's body
            raise oidc.SignInFailed(
                oidc.MSG_PROVIDER_DOWN, reason=f"token exchange failed: {type(exc).__name__}"
            ) from None
        id_token = token_info.get("id_token") if isinstance(token_info, dict) else None
        if not isinstance(id_token, str):
            raise oidc.SignInFailed(oidc.MSG_INVALID, reason="token answer has no id_token")
        claims = oidc.verify_id_token(id_token, nonce=kwargs["nonce"], config=config)
        user = sign_in_user(
            issuer=config.issuer, claims=claims, groups=oidc.groups_from_claims(claims), source=role_services.SOURCE_SSO
        )
        # For the session's re-checks (experiments.signin.recheck), written once the login is done.
        refresh_token = token_info.get("refresh_token")
        request.desk_sso_grant = SSOGrant(
            refresh_token=refresh_token if isinstance(refresh_token, str) else "",
            expires_at=float(claims["exp"]),
            nonce=claims["nonce"],
        )
        return user


def trusted_groups(request: HttpRequest) -> list[str]:
    """Group names from DJANGO_TRUSTED_GROUPS_HEADER (comma-separated), when one is configured."""
    if not settings.TRUSTED_GROUPS_HEADER:
        return []
    raw = request.headers.get(settings.TRUSTED_GROUPS_HEADER, "")
    return [name.strip() for name in raw.split(",") if name.strip()]


def sign_in_user(*, issuer: str, claims: dict[str, Any], groups: list[str], source: str) -> Any:
    """The user for these verified claims, with roles brought in line with `groups`."""
    try:
        profile = signin_services.profile_from_claims(issuer=issuer, claims=claims)
        user = signin_services.identity_user_get_or_create(profile=profile)
    except signin_services.IdentityRefused as exc:
        raise oidc.SignInFailed(str(exc), reason=f"identity refused: {exc}") from None
    signin_services.roles_sync_from_groups(
        user=user, groups=groups, source=source, auditor_groups=settings.OIDC_AUDITOR_GROUPS
    )
    return user


class TrustedHeaderBackend(RemoteUserBackend):
    """The user named by the trusted proxy's header (Django's remote-user support).

    The header's value is the identity (kept as an ExternalIdentity, like an SSO subject)
    and the username. A local account with that username that did not come from the proxy
    is refused, so a proxy account can never take over a password account.
    """

    def authenticate(self, request: HttpRequest | None, remote_user: str | None = None, **kwargs: Any) -> Any:
        if request is None or not remote_user or not settings.TRUSTED_USER_HEADER:
            return None
        user_model = get_user_model()
        existing = user_model.objects.filter(**{user_model.USERNAME_FIELD: remote_user}).first()
        if existing is not None and not signin_services.identity_matches(
            user=existing, issuer=PROXY_ISSUER, subject=remote_user
        ):
            logger.warning("Trusted header names %r, a local account; refused.", remote_user)
            return None
        claims = {"sub": remote_user, "preferred_username": remote_user}
        if "@" in remote_user:
            claims["email"] = remote_user
        try:
            return sign_in_user(
                issuer=PROXY_ISSUER, claims=claims, groups=trusted_groups(request), source=role_services.SOURCE_PROXY
            )
        except oidc.SignInFailed as exc:
            logger.warning("Trusted header sign-in of %r refused: %s", remote_user, exc.reason)
            return None
