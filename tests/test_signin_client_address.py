"""The client's address behind proxies: DJANGO_TRUSTED_PROXIES, the forwarded header, and the throttle."""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
from html import unescape
from pathlib import Path

import pytest

from experiments.signin.addresses import client_address
from experiments.signin.challenge import MSG_CHALLENGE, answer_solves
from tests.signin_check import check_fields

ROOT = Path(__file__).resolve().parent.parent
LOGIN = "/accounts/login/"


def _check(**env: str) -> subprocess.CompletedProcess:
    """`manage.py check` in development mode with `env`: how start-up reads the settings."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_URL"))}
    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env={**clean, "DJANGO_DEBUG": "1", **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# --- DJANGO_TRUSTED_PROXIES at start-up ---------------------------------------------------------
@pytest.mark.parametrize("everything", ["0.0.0.0/0", "::/0", "10.0.0.5, 0.0.0.0/0"])
def test_trusting_every_address_stops_start_up_readably(everything):
    result = _check(DJANGO_TRUSTED_PROXIES=everything)
    assert result.returncode != 0
    assert "DJANGO_TRUSTED_PROXIES" in result.stderr
    assert "every address" in result.stderr


def test_a_malformed_proxy_address_stops_start_up_naming_it():
    result = _check(DJANGO_TRUSTED_PROXIES="10.0.0.5,proxy.internal")
    assert result.returncode != 0
    assert "DJANGO_TRUSTED_PROXIES" in result.stderr
    assert "'proxy.internal'" in result.stderr


def test_addresses_and_networks_are_accepted():
    result = _check(DJANGO_TRUSTED_PROXIES="10.0.0.5, 10.1.0.0/24, fd00::/8, 192.0.2.7")
    assert result.returncode == 0, result.stderr


# --- The client address ------------------------------------------------------------------------
@pytest.fixture
def behind_proxy(settings):
    """Two reverse proxies of ours: 10.9.0.1 in front of the app, 10.9.1.0/24 in front of it."""
    settings.TRUSTED_PROXIES = ["10.9.0.1", "10.9.1.0/24"]
    settings.CLIENT_ADDRESS_HEADER = "X-Forwarded-For"


def _address(rf, peer: str, forwarded: str | None = None) -> str:
    extra = {"HTTP_X_FORWARDED_FOR": forwarded} if forwarded is not None else {}
    return client_address(rf.get("/", REMOTE_ADDR=peer, **extra))


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        ("10.9.0.1", "198.51.100.7", "198.51.100.7"),
        # Right-most untrusted hop: what the client wrote itself (left) proves nothing.
        ("10.9.0.1", "203.0.113.66, 198.51.100.7", "198.51.100.7"),
        ("10.9.0.1", "203.0.113.66, 198.51.100.7, 10.9.1.20", "198.51.100.7"),
        ("10.9.0.1", "10.9.1.5, 10.9.1.20", "10.9.1.5"),  # only proxies: the left-most
        ("10.9.0.1", "[2001:db8::7]:4711", "2001:db8::7"),
        ("10.9.0.1", "198.51.100.7:4711", "198.51.100.7"),
        ("::ffff:10.9.0.1", "198.51.100.7", "198.51.100.7"),  # the proxy over IPv6, IPv4-mapped
        ("10.9.0.1", "not-an-address", "10.9.0.1"),  # not what our proxy writes: the peer
        ("10.9.0.1", "198.51.100.7, unknown", "10.9.0.1"),
        ("10.9.0.1", None, "10.9.0.1"),
        ("10.9.0.1", "", "10.9.0.1"),
        # From anyone but a trusted proxy the header is ignored.
        ("203.0.113.9", "198.51.100.7", "203.0.113.9"),
    ],
)
def test_client_address(rf, behind_proxy, peer, forwarded, client):
    assert _address(rf, peer, forwarded) == client


def test_no_header_named_means_the_peer(rf, behind_proxy, settings):
    settings.CLIENT_ADDRESS_HEADER = ""
    assert _address(rf, "10.9.0.1", "198.51.100.7") == "10.9.0.1"


def test_no_trusted_proxies_means_the_peer(rf, settings):
    settings.TRUSTED_PROXIES = []
    assert _address(rf, "10.9.0.1", "198.51.100.7") == "10.9.0.1"


# --- The throttle behind a proxy ---------------------------------------------------------------
def _post(client, username: str, password: str, *, forwarded: str, peer: str = "10.9.0.1", **fields):
    data = {"username": username, "password": password, **fields}
    return client.post(LOGIN, data, REMOTE_ADDR=peer, HTTP_X_FORWARDED_FOR=forwarded)


@pytest.mark.django_db
def test_twenty_failures_through_the_proxy_do_not_lock_out_a_never_failed_user(client, pm, behind_proxy):
    # Before, every request counted against the proxy's address and Pat got 429.
    for i in range(20):
        _post(client, f"guess-{i}", "wrong", forwarded="198.51.100.7")
    assert _post(client, "pat", "pw-pat", forwarded="203.0.113.5").status_code == 302


@pytest.mark.django_db
def test_the_failing_client_behind_the_proxy_is_the_one_checked(client, pm, behind_proxy, settings):
    settings.LOGIN_CHALLENGE_BITS = 8
    for i in range(20):
        # A forged header names Pat's address: the proxy appends the real one, which counts.
        _post(client, f"guess-{i}", "wrong", forwarded="203.0.113.5, 198.51.100.7")
    attacker = client.get(LOGIN, REMOTE_ADDR="10.9.0.1", HTTP_X_FORWARDED_FOR="198.51.100.7")
    assert check_fields(attacker.content.decode()) is not None
    pat = client.get(LOGIN, REMOTE_ADDR="10.9.0.1", HTTP_X_FORWARDED_FOR="203.0.113.5")
    assert check_fields(pat.content.decode()) is None


@pytest.mark.django_db
def test_a_never_failed_user_sharing_the_failing_address_still_signs_in(client, pm, behind_proxy, settings):
    # An office NAT: the attacker and Pat reach the proxy from one address.
    settings.LOGIN_CHALLENGE_BITS = 8
    for i in range(25):
        _post(client, f"guess-{i}", "wrong", forwarded="198.51.100.7")
    page = client.get(LOGIN, REMOTE_ADDR="10.9.0.1", HTTP_X_FORWARDED_FOR="198.51.100.7").content.decode()
    answer = check_fields(page)
    assert answer is not None
    assert _post(client, "pat", "pw-pat", forwarded="198.51.100.7", **answer).status_code == 302


@pytest.mark.django_db
def test_a_check_answer_works_once_and_only_for_its_address(client, pm, behind_proxy, settings):
    settings.LOGIN_CHALLENGE_BITS = 8
    for i in range(20):
        _post(client, f"guess-{i}", "wrong", forwarded="198.51.100.7")
    for i in range(20):
        _post(client, f"guess-{i}", "wrong", forwarded="198.51.100.8")
    page = client.get(LOGIN, REMOTE_ADDR="10.9.0.1", HTTP_X_FORWARDED_FOR="198.51.100.7").content.decode()
    answer = check_fields(page)
    elsewhere = _post(client, "pat", "pw-pat", forwarded="198.51.100.8", **answer)
    assert MSG_CHALLENGE in unescape(elsewhere.content.decode())
    assert _post(client, "tess", "wrong", forwarded="198.51.100.7", **answer).status_code == 200  # spends it
    again = _post(client, "pat", "pw-pat", forwarded="198.51.100.7", **answer)
    assert MSG_CHALLENGE in unescape(again.content.decode())
    assert "_auth_user_id" not in client.session


@pytest.mark.django_db
def test_a_wrong_or_easier_answer_is_refused(client, pm, behind_proxy, settings):
    settings.LOGIN_CHALLENGE_BITS = 8
    for i in range(20):
        _post(client, f"guess-{i}", "wrong", forwarded="198.51.100.7")
    page = client.get(LOGIN, REMOTE_ADDR="10.9.0.1", HTTP_X_FORWARDED_FOR="198.51.100.7").content.decode()
    answer = check_fields(page)
    seed = re.search(r'data-challenge-seed="([^"]+)"', page).group(1)
    miss = next(str(n) for n in itertools.count() if not answer_solves(seed=seed, answer=str(n), bits=8))
    wrong = _post(client, "pat", "pw-pat", forwarded="198.51.100.7", **{**answer, "challenge_answer": miss})
    assert MSG_CHALLENGE in unescape(wrong.content.decode())
    settings.LOGIN_CHALLENGE_BITS = 12  # made harder after the page was shown
    harder = _post(client, "pat", "pw-pat", forwarded="198.51.100.7", **answer)
    assert MSG_CHALLENGE in unescape(harder.content.decode())
    assert "_auth_user_id" not in client.session
