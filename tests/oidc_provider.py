"""A small, real OpenID Connect provider for tests: discovery, JWKS, an authorize form and a token endpoint.

It listens on 127.0.0.1 on a port chosen at start, signs ID tokens with RS256 under a fresh
RSA key, and implements the authorization code flow with state, nonce and PKCE (S256), so the
dashboard talks to it exactly as to a company's provider. Tests choose who signs in
(`add_person`) and can spoil the next ID token (`spoil`) to check each refusal.

It issues refresh tokens (unless `issue_refresh_tokens` is off) and answers the refresh
grant with a new ID token made from the person's claims as they are now, so a test can
remove someone from a group (`add_person` again) or from the provider (`remove_person`)
and see the dashboard's re-check follow. Refresh tokens rotate: each works once.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

import jwt
import requests
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from tests.loopback import LoopbackServer

CLIENT_ID = "experiment-desk-test"
CLIENT_SECRET = "provider-test-secret-never-shown"


def _new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


class LoopbackProvider:
    """Start with `.start()`, stop with `.stop()`; `.url` is the issuer."""

    def __init__(self, *, client_id: str = CLIENT_ID, client_secret: str = CLIENT_SECRET) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.key = _new_key()
        self.kid = "test-key-" + secrets.token_hex(4)
        self.people: dict[str, dict[str, Any]] = {}
        self.codes: dict[str, dict[str, Any]] = {}
        self.spoiled: dict[str, Any] = {}
        self.issued_nonces: list[str] = []
        self.issue_refresh_tokens = True
        self.refresh_grants: dict[str, str] = {}  # refresh token -> username
        self.refreshes = 0
        self.id_token_lifetime = 300
        self.lock = threading.Lock()
        self._server: LoopbackServer | None = None
        self.url = ""

    # --- test controls --------------------------------------------------------------
    def add_person(
        self, username: str, *, sub: str | None = None, groups: list[str] | None = None, **claims: Any
    ) -> None:
        """Someone who can sign in here as `username`; extra keyword arguments become claims."""
        self.people[username] = {
            "sub": sub if sub is not None else "sub-" + username,
            "preferred_username": username,
            "groups": list(groups or []),
            **claims,
        }

    def remove_person(self, username: str) -> None:
        """The person leaves the company: sign-in and their refresh tokens stop working."""
        self.people.pop(username, None)

    def reset(self) -> None:
        """Nobody known, nothing spoiled, refresh tokens on and none outstanding."""
        self.people.clear()
        self.spoil()
        self.issue_refresh_tokens = True
        self.id_token_lifetime = 300
        with self.lock:
            self.refresh_grants.clear()
            self.refreshes = 0

    def spoil(self, **changes: Any) -> None:
        """Spoil the next ID tokens: iss=, aud= (a string or a list), azp=, sub=, exp_offset=,
        nonce=, drop_sub=True, foreign_key=True."""
        self.spoiled = dict(changes)

    # --- lifecycle --------------------------------------------------------------------
    def start(self) -> LoopbackProvider:
        provider = self

        class Handler(_Handler):
            owner = provider

        self._server = LoopbackServer(Handler, name="oidc-test-provider")
        self.url = self._server.url
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    # --- a person's side of the flow, for tests without a browser ----------------------
    def sign_in(self, authorize_url: str, username: str) -> str:
        """Submit the authorize form as `username`; returns where the provider sends the browser."""
        query = {k: v[0] for k, v in parse_qs(urlparse(authorize_url).query).items()}
        answer = requests.post(
            self.url + "/authorize", data={**query, "username": username}, allow_redirects=False, timeout=5
        )
        assert answer.status_code == 302, answer.text
        return answer.headers["Location"]

    # --- the provider's side ------------------------------------------------------------
    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.url,
            "authorization_endpoint": self.url + "/authorize",
            "token_endpoint": self.url + "/token",
            "jwks_uri": self.url + "/jwks",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
            "scopes_supported": ["openid", "email", "profile", "groups"],
        }

    def jwks(self) -> dict[str, Any]:
        public = RSAAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        return {"keys": [{**public, "kid": self.kid, "use": "sig", "alg": "RS256"}]}

    def issue_code(self, params: dict[str, str], username: str) -> str:
        code = secrets.token_urlsafe(24)
        with self.lock:
            self.codes[code] = {"params": params, "username": username, "at": time.time()}
        return code

    def _tokens(self, username: str, *, nonce: str | None) -> dict[str, Any]:
        answer = {
            "access_token": secrets.token_urlsafe(24),
            "token_type": "Bearer",
            "expires_in": self.id_token_lifetime,
            "id_token": self.id_token(self.people[username], nonce=nonce),
        }
        if self.issue_refresh_tokens:
            answer["refresh_token"] = secrets.token_urlsafe(32)
            with self.lock:
                self.refresh_grants[answer["refresh_token"]] = username
        return answer

    def refresh(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        with self.lock:
            username = self.refresh_grants.pop(form.get("refresh_token", ""), None)  # rotates: works once
            self.refreshes += 1
        if username is None or username not in self.people:
            return 400, {"error": "invalid_grant"}
        # OpenID Connect Core 12.2: a refreshed ID token should carry no nonce.
        return 200, self._tokens(username, nonce=None)

    def exchange(self, form: dict[str, str], basic: tuple[str, str] | None) -> tuple[int, dict[str, Any]]:
        client_id, secret = basic or (form.get("client_id", ""), form.get("client_secret", ""))
        if client_id != self.client_id or secret != self.client_secret:
            return 401, {"error": "invalid_client"}
        if form.get("grant_type") == "refresh_token":
            return self.refresh(form)
        with self.lock:
            grant = self.codes.pop(form.get("code", ""), None)  # a code works once
        if grant is None or form.get("grant_type") != "authorization_code" or grant["username"] not in self.people:
            return 400, {"error": "invalid_grant"}
        params = grant["params"]
        if form.get("redirect_uri") != params.get("redirect_uri"):
            return 400, {"error": "invalid_grant", "error_description": "redirect_uri differs"}
        if params.get("code_challenge"):
            digest = hashlib.sha256(form.get("code_verifier", "").encode()).digest()
            if base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != params["code_challenge"]:
                return 400, {"error": "invalid_grant", "error_description": "PKCE verifier does not match"}
        return 200, self._tokens(grant["username"], nonce=params.get("nonce", ""))

    def id_token(self, person: dict[str, Any], *, nonce: str | None) -> str:
        now = int(time.time())
        spoiled = self.spoiled
        claims = {
            **person,
            "iss": spoiled.get("iss", self.url),
            "aud": spoiled.get("aud", self.client_id),
            "iat": now,
            "exp": now + self.id_token_lifetime + int(spoiled.get("exp_offset", 0)),
        }
        if nonce is not None or "nonce" in spoiled:
            claims["nonce"] = spoiled.get("nonce", nonce)
        if "sub" in spoiled:
            claims["sub"] = spoiled["sub"]
        if "azp" in spoiled:
            claims["azp"] = spoiled["azp"]
        if spoiled.get("drop_sub"):
            claims.pop("sub", None)
        if nonce is not None:
            self.issued_nonces.append(nonce)
        key = _new_key() if spoiled.get("foreign_key") else self.key
        return jwt.encode(claims, key, algorithm="RS256", headers={"kid": self.kid})


class _Handler(BaseHTTPRequestHandler):
    owner: LoopbackProvider

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _json(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _form(self) -> dict[str, str]:
        length = int(self.headers.get("Content-Length") or 0)
        return {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}

    def do_GET(self) -> None:
        url = urlparse(self.path)
        if url.path == "/.well-known/openid-configuration":
            return self._json(200, self.owner.discovery())
        if url.path == "/jwks":
            return self._json(200, self.owner.jwks())
        if url.path == "/authorize":
            params = {k: v[0] for k, v in parse_qs(url.query).items()}
            return self._authorize_form(params)
        return self._json(404, {"error": "not_found"})

    def do_POST(self) -> None:
        url = urlparse(self.path)
        form = self._form()
        if url.path == "/authorize":
            return self._authorize(form)
        if url.path == "/token":
            basic = None
            header = self.headers.get("Authorization", "")
            if header.startswith("Basic "):
                user, _, secret = base64.b64decode(header[6:]).decode().partition(":")
                basic = (user, secret)
            status, body = self.owner.exchange(form, basic)
            return self._json(status, body)
        return self._json(404, {"error": "not_found"})

    def _authorize_form(self, params: dict[str, str]) -> None:
        if params.get("client_id") != self.owner.client_id or params.get("response_type") != "code":
            return self._json(400, {"error": "unauthorized_client"})
        hidden = "".join(
            f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">' for k, v in params.items()
        )
        page = (
            "<!doctype html><title>Test identity provider</title><h1>Test identity provider</h1>"
            f'<form method="post" action="/authorize">{hidden}'
            '<label for="username">Username</label> <input id="username" name="username">'
            '<button type="submit">Continue</button></form>'
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        self.wfile.write(page)

    def _authorize(self, form: dict[str, str]) -> None:
        username = form.pop("username", "")
        if username not in self.owner.people or form.get("client_id") != self.owner.client_id:
            return self._json(400, {"error": "access_denied"})
        if "openid" not in form.get("scope", "").split():
            return self._json(400, {"error": "invalid_scope"})
        code = self.owner.issue_code(form, username)
        target = form["redirect_uri"] + "?" + urlencode({"code": code, "state": form.get("state", "")})
        self.send_response(302)
        self.send_header("Location", target)
        self.send_header("Content-Length", "0")
        self.end_headers()
