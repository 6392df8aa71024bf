"""Keeping a signed-in person's roles in line with their identity provider during the session.

Roles come from groups at sign-in; a session lasts up to DJANGO_SESSION_ABSOLUTE_TIMEOUT.
Someone removed from a group must not keep its role that long, so:

- behind the sign-in proxy, the groups header comes with every request: when it differs
  from what the session last synced (or is missing), the roles are synced on that request;
- with SSO, the session is re-checked with the provider when its ID token expires, or
  DJANGO_OIDC_RECHECK_SECONDS after the last check if that is sooner (see sso_recheck).
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.http import HttpRequest

from experiments.services import roles as role_services
from experiments.services import signin as signin_services
from experiments.signin.backends import trusted_groups

logger = logging.getLogger(__name__)

# Session key: the groups (sorted, comma-joined) the proxy header last had, as synced.
PROXY_GROUPS = "desk_proxy_groups"


def proxy_groups_resync(request: HttpRequest) -> None:
    """Sync the roles of a person signed in by the proxy header when its groups header changed
    since the last sync in this session (a missing header is no groups)."""
    groups = sorted({name for name in trusted_groups(request)})
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
