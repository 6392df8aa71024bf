"""Personal API tokens: making one (shown once), revoking it, and recognising it on a request.

A token is `edk_` and 40 random characters. Only its SHA-256 is stored, with its first
characters as a prefix to tell tokens apart. It acts as its owner with the owner's roles
as they are at each request, so it never grants more than the person has now. Making and
revoking a token are entries in the audit hash chain (its name, scope, prefix and expiry;
never the token).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

from experiments import auditlog
from experiments.models import ApiToken, EntryKind, TokenScope

TOKEN_PREFIX = "edk_"  # noqa: S105 - what every token starts with, not a secret
DEFAULT_DAYS = 90
MAX_DAYS = 365
PREFIX_SHOWN = 12  # "edk_" and 8 characters: enough to tell a person's tokens apart
NAME_MAX_LENGTH = ApiToken._meta.get_field("name").max_length
# A token's last use is written at most this often: one write per request would make every
# API read a write.
LAST_USED_RESOLUTION = dt.timedelta(minutes=1)

MSG_NAME = f"Give the token a name of 1 to {NAME_MAX_LENGTH} characters, saying what uses it."
MSG_SCOPE = "Choose the scope: read, or act."
MSG_DAYS = "A token lives from 1 to {max} days."
MSG_ALREADY_REVOKED = "That token was already revoked."


@dataclass(frozen=True)
class MadeToken:
    """A token just made: the row, and the token itself, which is never stored or shown again."""

    token: ApiToken
    secret: str


def token_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def token_problem(*, name: str, scope: str, days: int | None) -> str | None:
    """Why a token with these values cannot be made, in words, or None."""
    if not name.strip() or len(name.strip()) > NAME_MAX_LENGTH:
        return MSG_NAME
    if scope not in TokenScope.values:
        return MSG_SCOPE
    if days is not None and not 1 <= days <= MAX_DAYS:
        return MSG_DAYS.format(max=MAX_DAYS)
    return None


def _token_payload(token: ApiToken) -> dict[str, Any]:
    return {
        "token_id": token.pk,
        "owner": {"id": token.user_id, "name": auditlog.display_name(token.user)},
        "name": token.name,
        "scope": token.scope,
        "prefix": token.prefix,
        "expires_at": token.expires_at,
    }


def api_token_create(*, user: Any, name: str, scope: str, days: int | None = None, by: Any = None) -> MadeToken:
    """Make a token for `user` (by `by`, when an admin or a command makes it for them).

    ValueError with a readable message for a bad name, scope or lifetime. The token is
    returned once, in MadeToken.secret.
    """
    problem = token_problem(name=name, scope=scope, days=days)
    if problem:
        raise ValueError(problem)
    secret = TOKEN_PREFIX + secrets.token_urlsafe(30)
    now = timezone.now()
    by = by or user
    with transaction.atomic():
        token = ApiToken.objects.create(
            user=user,
            name=name.strip(),
            scope=scope,
            prefix=secret[:PREFIX_SHOWN],
            token_hash=token_hash(secret),
            created_at=now,
            expires_at=now + dt.timedelta(days=days or DEFAULT_DAYS),
        )
        auditlog.append_entry(
            kind=EntryKind.TOKEN_CREATED,
            actor=by if getattr(by, "pk", None) else None,
            actor_name=auditlog.display_name(by) if getattr(by, "pk", None) else str(by),
            payload=_token_payload(token),
        )
    return MadeToken(token=token, secret=secret)


def api_token_revoke(*, token: ApiToken, by: Any) -> None:
    """Revoke a token from now on (its owner, or an admin): chained; ValueError if already revoked."""
    now = timezone.now()
    with transaction.atomic():
        if not ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=now):
            raise ValueError(MSG_ALREADY_REVOKED)
        token.revoked_at = now
        auditlog.append_entry(
            kind=EntryKind.TOKEN_REVOKED,
            actor=by if getattr(by, "pk", None) else None,
            actor_name=auditlog.display_name(by) if getattr(by, "pk", None) else str(by),
            payload=_token_payload(token),
        )


def api_token_authenticate(secret: str) -> ApiToken | None:
    """The usable token this secret is, with its owner loaded, or None (unknown, expired,
    revoked, or an inactive owner). Notes when it was last used."""
    if not secret.startswith(TOKEN_PREFIX):
        return None
    token = ApiToken.objects.select_related("user").filter(token_hash=token_hash(secret)).first()
    if token is None or not token.is_usable or not token.user.is_active:
        return None
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now
    return token


def api_token_throttle(token: ApiToken) -> float:
    """Count one request of `token` against API_RATE_LIMIT_PER_MINUTE; the seconds to wait
    when over it this minute, else 0."""
    now = time.time()
    window = int(now // 60)
    key = f"api-rate:{token.pk}:{window}"
    cache.add(key, 0, timeout=90)
    try:
        count = cache.incr(key)
    except ValueError:  # expired between add and incr: this is its first request
        cache.set(key, 1, timeout=90)
        count = 1
    if count <= settings.API_RATE_LIMIT_PER_MINUTE:
        return 0.0
    return (window + 1) * 60 - now
