"""The check a password sign-in from a busy address must pass: a small proof of work.

Past DJANGO_LOGIN_ADDRESS_LIMIT failures from one address, that address is not locked
out (behind a NAT or an office proxy it is everyone's address, and a person who never
failed would be locked out with the attacker). Instead each password attempt from it
must carry the answer to a fresh puzzle: a counter such that SHA-256 of the puzzle's seed,
a colon and the counter starts with DJANGO_LOGIN_CHALLENGE_BITS zero bits. A browser
finds it in about a second (static/js/signin-check.js); a script guessing passwords pays
that work for every guess. The puzzle is signed, bound to the address, used once and
valid for CHALLENGE_MAX_AGE seconds, so answers cannot be stored up or shared.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from django.conf import settings
from django.core import signing
from django.core.cache import cache
from django.http import HttpRequest

CHALLENGE_MAX_AGE = 600
_SALT = "experiments.signin.challenge"
_USED = "signin-challenge-used:"
MSG_CHALLENGE = (
    "Many sign-ins failed from your network recently, so this form runs a short check in your browser "
    "first (it needs JavaScript). Wait until it says the check is done, then log in."
)


@dataclass(frozen=True, slots=True)
class Challenge:
    """A puzzle for the sign-in form: the signed token it sends back, and the seed and bits the browser works on."""

    token: str
    seed: str
    bits: int


def challenge_issue(*, address: str) -> Challenge:
    """A new puzzle for a form shown to `address`, at the configured difficulty."""
    seed, bits = secrets.token_hex(8), settings.LOGIN_CHALLENGE_BITS
    token = signing.dumps({"a": address, "s": seed, "b": bits}, salt=_SALT)
    return Challenge(token=token, seed=seed, bits=bits)


def answer_solves(*, seed: str, answer: str, bits: int) -> bool:
    """Whether SHA-256("seed:answer") starts with `bits` zero bits."""
    digest = hashlib.sha256(f"{seed}:{answer}".encode()).digest()
    return int.from_bytes(digest, "big") >> (256 - bits) == 0


def challenge_passed(*, request: HttpRequest, address: str) -> bool:
    """Whether the posted form answers a puzzle issued to `address`, not too old, at least as
    hard as asked now, and not answered before (the answer is spent by this call)."""
    token, answer = request.POST.get("challenge", ""), request.POST.get("challenge_answer", "")
    if not token or not answer.isdigit() or len(answer) > 20:
        return False
    try:
        puzzle = signing.loads(token, salt=_SALT, max_age=CHALLENGE_MAX_AGE)
    except signing.BadSignature:  # also an expired one
        return False
    if puzzle.get("a") != address or puzzle.get("b", -1) < settings.LOGIN_CHALLENGE_BITS:
        return False
    if not answer_solves(seed=puzzle["s"], answer=answer, bits=puzzle["b"]):
        return False
    # Spent once: a shared cache (Redis) makes that hold across processes.
    return cache.add(_USED + puzzle["s"], True, timeout=CHALLENGE_MAX_AGE)
