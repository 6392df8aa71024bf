"""Keeping a signed-in person's roles in line with their identity provider during the session.

Roles come from groups at sign-in; a session lasts up to DJANGO_SESSION_ABSOLUTE_TIMEOUT.
Someone removed from a group must not keep its role that long, so:

- behind the sign-in proxy, the groups header comes with every request: when it differs
  from what the session last synced (or is missing), the roles are synced on that request;
- with SSO, the session is re-checked with the provider when its ID token expires, or
  OIDC_RECHECK_SECONDS after the last check if that is sooner (see sso_recheck).

The SSO re-check uses the refresh token the provider gave at sign-in, from the server: it
works on any request (an htmx fragment, a form's POST) where a silent re-authentication
(`prompt=none`) would need a top-level redirect to the provider, and the provider decides
with its current view of the person (removed from a group, deactivated, signed out there).
A session without a refresh token, or whose refresh is refused or cannot be made, ends: the
person signs in again, which brings the roles in line.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from django.conf import settings
from django.contrib import auth
from django.core.cache import cache
from django.http import HttpRequest

from experiments.models import ExternalIdentity
from experiments.services import roles as role_services
from experiments.services import signin as signin_services
from experiments.signin import oidc
from experiments.signin.backends import trusted_groups

logger = logging.getLogger(__name__)

# Session key: the groups (sorted, comma-joined) the proxy header last had, as synced.
PROXY_GROUPS = "desk_proxy_groups"
# Session keys of an SSO session: the refresh token (a secret: never logged or shown), the
# sign-in's nonce, and when the next re-check is due (epoch seconds).
SSO_REFRESH_TOKEN = "desk_sso_refresh_token"  # noqa: S105 - the session key's name, not a token
SSO_NONCE = "desk_sso_nonce"
SSO_RECHECK_AT = "desk_sso_recheck_at"
SSO_BACKEND = "experiments.signin.backends.OIDCBackend"
_RECHECKING = "sso-recheck:"
MSG_SSO_RECHECK_FAILED = "Your sign-in could not be confirmed with your identity provider. Please sign in again."


def proxy_groups_resync(request: HttpRequest) -> None:
    """Sync the roles of a person signed in by the proxy header when its groups header changed
    since the last sync in this session (a missing header is no groups)."""
    groups = sorted(set(trusted_groups(request)))
    seen = ",".join(groups)
    if request.session.get(PROXY_GROUPS) == seen:
        return
    changes = signin_services.roles_sync_from_groups(
        user=request.user,
        groups=groups,
        source=role_services.SOURCE_PROXY,
        auditor_groups=settings.OIDC_AUDITOR_GROUPS,
    )
    if changes:
        logger.info("Roles of %s changed with the proxy's groups header (%d changes).", request.user, changes)
    request.session[PROXY_GROUPS] = seen


def _next_check(expires_at: float) -> float:
    return min(expires_at, time.time() + settings.OIDC_RECHECK_SECONDS)


def sso_session_start(request: HttpRequest) -> None:
    """Keep what an SSO sign-in left (OIDCBackend's grant) in the new session, and when to re-check it."""
    grant = getattr(request, "desk_sso_grant", None)
    if grant is None:
        return
    request.session[SSO_REFRESH_TOKEN] = grant.refresh_token
    request.session[SSO_NONCE] = grant.nonce
    request.session[SSO_RECHECK_AT] = _next_check(grant.expires_at)


def sso_recheck_due(request: HttpRequest) -> bool:
    """Whether this request's session is an SSO one whose re-check is due (a session from
    before re-checks existed is due at once)."""
    session = request.session
    return session.get(auth.BACKEND_SESSION_KEY) == SSO_BACKEND and time.time() >= session.get(SSO_RECHECK_AT, 0)


def sso_recheck(request: HttpRequest) -> bool:
    """Re-check an SSO session with the provider: True when it goes on, with the roles brought
    in line with the groups the provider sends now; False when it must end."""
    user, session = request.user, request.session
    # One re-check per session at a time: a rotated refresh token works once, so a second
    # request racing with the same token would be refused and end the session.
    lock = _RECHECKING + (session.session_key or "")
    if not cache.add(lock, True, timeout=int(settings.OIDC_TIMEOUT) + 5):
        return True  # another request of this session is re-checking it now
    try:
        return _recheck(request, user=user)
    finally:
        cache.delete(lock)


def _recheck(request: HttpRequest, *, user: Any) -> bool:
    session = request.session
    username = user.get_username()
    refresh_token = session.get(SSO_REFRESH_TOKEN, "")
    identity = ExternalIdentity.objects.filter(user=user).first()
    if not refresh_token or identity is None:
        logger.info("SSO session of %s is due for its re-check and has no refresh token: it ends.", username)
        return False
    try:
        config = oidc.provider_config()
        if identity.issuer != config.issuer:
            raise oidc.SignInFailed(oidc.MSG_WRONG_ISSUER, reason="the account belongs to another issuer")
        refreshed = oidc.refresh(refresh_token=refresh_token, config=config)
        claims = oidc.verify_refreshed_id_token(
            refreshed.id_token, subject=identity.subject, nonce=session.get(SSO_NONCE), config=config
        )
    except oidc.SignInFailed as exc:
        logger.warning("SSO re-check of %s failed, the session ends: %s", username, exc.reason)
        return False
    changes = signin_services.roles_sync_from_groups(
        user=user,
        groups=oidc.groups_from_claims(claims),
        source=role_services.SOURCE_SSO_RECHECK,
        auditor_groups=settings.OIDC_AUDITOR_GROUPS,
    )
    if changes:
        logger.info("Roles of %s changed at the SSO re-check (%d changes).", username, changes)
    session[SSO_REFRESH_TOKEN] = refreshed.refresh_token
    session[SSO_RECHECK_AT] = _next_check(float(claims["exp"]))
    return True
