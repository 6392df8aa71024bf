"""The client's address behind proxies: DJANGO_TRUSTED_PROXIES, the forwarded header, and the throttle."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


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
