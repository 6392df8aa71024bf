"""The only module that speaks HTTP to the identity provider: discovery, keys, and ID token checks.

Endpoints are not configured one by one: they come from the issuer's
`/.well-known/openid-configuration`, read when first needed and kept for an hour.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import jwt
import requests
from django.conf import settings

from experiments.secrets import SecretConfigError, read_secret

logger = logging.getLogger(__name__)

DISCOVERY_PATH = "/.well-known/openid-configuration"
DISCOVERY_MAX_AGE = 3600
# Clock difference tolerated between us and the provider when checking exp, iat and nbf.
CLOCK_LEEWAY_SECONDS = 60

# What a person reads when sign-in fails. The log gets the reason, never the token.
MSG_PROVIDER_DOWN = "The sign-in service could not be reached. Try again in a minute."
MSG_BAD_SIGNATURE = "The sign-in answer was not signed by your identity provider."
MSG_WRONG_ISSUER = "The sign-in answer came from a different identity provider than the one configured."
MSG_WRONG_AUDIENCE = "The sign-in answer was meant for another application."
MSG_EXPIRED = "The sign-in answer had expired. Please sign in again."
MSG_NONCE = "The sign-in answer did not belong to this sign-in (it may have been replayed). Please sign in again."
MSG_NO_SUBJECT = "The identity provider did not say who you are (no subject). Ask your identity team."
MSG_INVALID = "The sign-in answer could not be verified. Please sign in again."
MSG_STATE = "This sign-in link was already used or has expired. Please sign in again."
MSG_DENIED = "The identity provider did not sign you in."


class SignInFailed(Exception):
    """Sign-in through the provider failed; `str()` is safe to show, `reason` is for the log."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    end_session_endpoint: str = ""


_cache: dict[str, tuple[float, ProviderConfig]] = {}
_cache_lock = threading.Lock()


def is_configured() -> bool:
    """Whether single sign-on is set up (issuer and client id)."""
    return bool(settings.OIDC_ISSUER_URL and settings.OIDC_CLIENT_ID)


def client_secret() -> str:
    """OIDC_CLIENT_SECRET, or the contents of OIDC_CLIENT_SECRET_FILE; read now, never kept in settings."""
    try:
        return read_secret("OIDC_CLIENT_SECRET")
    except SecretConfigError as exc:
        raise SignInFailed(MSG_PROVIDER_DOWN, reason=str(exc)) from None


def _get_json(url: str) -> Any:
    try:
        response = requests.get(url, timeout=settings.OIDC_TIMEOUT, headers={"Accept": "application/json"})
        response.raise_for_status()
        return response.json()
    except (requests.RequestException, ValueError) as exc:
        raise SignInFailed(MSG_PROVIDER_DOWN, reason=f"GET {url} failed: {type(exc).__name__}") from None


def provider_config() -> ProviderConfig:
    """The issuer's endpoints from its discovery document (kept for an hour per process)."""
    issuer = settings.OIDC_ISSUER_URL
    with _cache_lock:
        cached = _cache.get(issuer)
    if cached and time.monotonic() - cached[0] < DISCOVERY_MAX_AGE:
        return cached[1]
    document = _get_json(issuer + DISCOVERY_PATH)
    try:
        config = ProviderConfig(
            issuer=str(document["issuer"]),
            authorization_endpoint=str(document["authorization_endpoint"]),
            token_endpoint=str(document["token_endpoint"]),
            jwks_uri=str(document["jwks_uri"]),
            end_session_endpoint=str(document.get("end_session_endpoint") or ""),
        )
    except (KeyError, TypeError):
        raise SignInFailed(MSG_PROVIDER_DOWN, reason="discovery document lacks a required endpoint") from None
    # The discovery document must name the issuer we were given (OpenID Connect Discovery 4.3).
    if config.issuer.rstrip("/") != issuer:
        raise SignInFailed(MSG_WRONG_ISSUER, reason=f"discovery names issuer {config.issuer!r}, configured {issuer!r}")
    with _cache_lock:
        _cache[issuer] = (time.monotonic(), config)
    return config


def forget_provider_config() -> None:
    """Drop the cached discovery documents (tests; a provider that moved its endpoints)."""
    with _cache_lock:
        _cache.clear()


def _signing_key(token: str, config: ProviderConfig) -> jwt.PyJWK:
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise SignInFailed(MSG_INVALID, reason="ID token is not a JWT") from None
    if header.get("alg") != "RS256":
        raise SignInFailed(MSG_BAD_SIGNATURE, reason=f"ID token algorithm {header.get('alg')!r}, expected RS256")
    keys = _get_json(config.jwks_uri)
    for key in keys.get("keys", []) if isinstance(keys, dict) else []:
        if key.get("kty") == "RSA" and key.get("kid") == header.get("kid") and key.get("use", "sig") == "sig":
            try:
                return jwt.PyJWK(key, algorithm="RS256")
            except jwt.PyJWTError:
                break
    raise SignInFailed(MSG_BAD_SIGNATURE, reason=f"no RS256 signing key with kid {header.get('kid')!r} in the JWKS")


def _decode(token: str, config: ProviderConfig) -> dict[str, Any]:
    """The claims once signature (RS256, the issuer's JWKS), issuer, audience, authorized
    party and expiry are checked; SignInFailed otherwise."""
    key = _signing_key(token, config)
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=["RS256"],
            audience=settings.OIDC_CLIENT_ID,
            issuer=config.issuer,
            leeway=CLOCK_LEEWAY_SECONDS,
            options={"require": ["iss", "aud", "exp", "iat"]},
        )
    except jwt.InvalidSignatureError:
        raise SignInFailed(MSG_BAD_SIGNATURE, reason="ID token signature does not verify") from None
    except jwt.InvalidIssuerError:
        raise SignInFailed(MSG_WRONG_ISSUER, reason="ID token issuer does not match") from None
    except jwt.InvalidAudienceError:
        raise SignInFailed(MSG_WRONG_AUDIENCE, reason="ID token audience does not include our client id") from None
    except jwt.ExpiredSignatureError:
        raise SignInFailed(MSG_EXPIRED, reason="ID token expired") from None
    except jwt.PyJWTError as exc:
        raise SignInFailed(MSG_INVALID, reason=f"ID token rejected: {type(exc).__name__}: {exc}") from None
    _check_authorized_party(claims)
    return claims


def verify_id_token(token: str, *, nonce: str | None, config: ProviderConfig) -> dict[str, Any]:
    """The ID token's claims once its signature (RS256, the issuer's JWKS), issuer,
    audience and authorized party, expiry, nonce and subject are checked; SignInFailed otherwise."""
    claims = _decode(token, config)
    if nonce is None or claims.get("nonce") != nonce:
        raise SignInFailed(MSG_NONCE, reason="ID token nonce does not match this sign-in")
    if not isinstance(claims.get("sub"), str) or not claims["sub"].strip():
        raise SignInFailed(MSG_NO_SUBJECT, reason="ID token has no sub claim")
    return claims


def verify_refreshed_id_token(token: str, *, subject: str, nonce: str | None, config: ProviderConfig) -> dict[str, Any]:
    """A refreshed ID token's claims, checked as at sign-in and, per OpenID Connect Core 12.2,
    for the same subject, with no nonce or the sign-in's one."""
    claims = _decode(token, config)
    if claims.get("sub") != subject:
        raise SignInFailed(MSG_INVALID, reason="refreshed ID token names another subject")
    if "nonce" in claims and claims["nonce"] != nonce:
        raise SignInFailed(MSG_NONCE, reason="refreshed ID token carries a foreign nonce")
    return claims


@dataclass(frozen=True, slots=True)
class Refreshed:
    """The provider's answer to a refresh: the new ID token and the refresh token to use next
    (the same one unless the provider rotates them)."""

    id_token: str
    refresh_token: str


def refresh(*, refresh_token: str, config: ProviderConfig) -> Refreshed:
    """Ask the token endpoint for new tokens with `refresh_token` (the refresh grant).

    SignInFailed when the provider refuses (the person was removed or signed out there, the
    grant was revoked), cannot be reached, or answers without an ID token. Neither token
    ever reaches a log line or an exception's text: the reason names the answer's status and
    its OAuth error code only.
    """
    form = {
        "grant_type": "refresh_token",
        "refresh_token": refresh_token,
        "client_id": settings.OIDC_CLIENT_ID,
        "client_secret": client_secret(),
    }
    try:
        response = requests.post(
            config.token_endpoint, data=form, timeout=settings.OIDC_TIMEOUT, headers={"Accept": "application/json"}
        )
        answer = response.json()
    except (requests.RequestException, ValueError) as exc:
        raise SignInFailed(MSG_PROVIDER_DOWN, reason=f"refresh failed: {type(exc).__name__}") from None
    if response.status_code != 200 or not isinstance(answer, dict):
        error = answer.get("error") if isinstance(answer, dict) else None
        code = error[:50] if isinstance(error, str) else "none"
        raise SignInFailed(MSG_DENIED, reason=f"refresh refused: HTTP {response.status_code}, error {code!r}")
    id_token = answer.get("id_token")
    if not isinstance(id_token, str):
        raise SignInFailed(MSG_INVALID, reason="refresh answer has no id_token")
    rotated = answer.get("refresh_token")
    return Refreshed(id_token=id_token, refresh_token=rotated if isinstance(rotated, str) else refresh_token)


def _check_authorized_party(claims: dict[str, Any]) -> None:
    """OpenID Connect Core 3.1.3.7: a token for several audiences must name us as its
    authorized party (azp); an azp, when present, must be our client id. PyJWT checks only
    that aud includes us."""
    audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
    azp = claims.get("azp")
    if len(audiences) > 1 and azp is None:
        raise SignInFailed(MSG_WRONG_AUDIENCE, reason="ID token has several audiences and no azp")
    if azp is not None and azp != settings.OIDC_CLIENT_ID:
        raise SignInFailed(MSG_WRONG_AUDIENCE, reason="ID token azp is not our client id")


def groups_from_claims(claims: dict[str, Any]) -> list[str]:
    """The groups claim (OIDC_GROUPS_CLAIM) as a list of names; a single string counts as one group."""
    value = claims.get(settings.OIDC_GROUPS_CLAIM)
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [item for item in value if isinstance(item, str)]
    return []
