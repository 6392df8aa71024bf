"""docs/deploying-behind-a-proxy.md, run for real: Debian's nginx in front of gunicorn.

nginx runs as a child of this test with the document's server block (only its port,
certificate and upstream swapped), in the foreground, on free loopback ports, with every
path in a temporary directory. gunicorn runs dashboard/gunicorn_conf.py with the document's
environment over a throwaway SQLite database. Clients connect to nginx from different
loopback addresses (all of 127.0.0.0/8 is this machine), so nginx sees different clients
while gunicorn sees nginx only: exactly the situation behind any reverse proxy.

Needs /usr/sbin/nginx (`apt-get install -y nginx`); `.ci/run` installs it and sets
NGINX_TESTS=required, which turns the skip into a failure.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from requests.adapters import HTTPAdapter

from tests.processes import ROOT, Server

DOC = ROOT / "docs" / "deploying-behind-a-proxy.md"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
ATTACKER, PAT = "127.0.0.2", "127.0.0.3"
# Failures from one address before its sign-ins must pass the check: low, so that a few
# attempts (each costs a production-strength password hash) show it.
ADDRESS_LIMIT = 3
PASSWORD = "behind-a-proxy-pw"


def _require_nginx() -> None:
    if os.path.exists(NGINX):
        return
    reason = f"the reverse-proxy test needs nginx at {NGINX} (apt-get install -y nginx)"
    if os.environ.get("NGINX_TESTS") == "required":
        pytest.fail(f"NGINX_TESTS=required but {reason}")
    pytest.skip(reason)


def documented(language: str) -> str:
    """The document's code block in `language` (there is exactly one)."""
    (block,) = re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), flags=re.DOTALL)
    return block


def documented_environment() -> dict[str, str]:
    """The variables the document's gunicorn command line sets."""
    return dict(re.findall(r"^(\w+)=(\S+) \\$", documented("sh"), flags=re.MULTILINE))


def swap(text: str, old: str, new: str) -> str:
    assert old in text, f"the document no longer says {old!r}: update this test with it"
    return text.replace(old, new)


def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return probe.getsockname()[1]


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


class Nginx:
    """nginx in the foreground with the document's server block, every path under `directory`."""

    def __init__(self, directory: Path, *, port: int, upstream: str) -> None:
        self.port = port
        cert, key = self.certificate = self_signed(directory)
        server = documented("nginx")
        server = swap(server, "listen 443 ssl;", f"listen 127.0.0.1:{self.port} ssl;")
        server = swap(server, "/etc/ssl/desk/fullchain.pem", str(cert))
        server = swap(server, "/etc/ssl/desk/privkey.pem", str(key))
        server = swap(server, "http://127.0.0.1:8000", upstream)
        temp = " ".join(
            f"{kind}_temp_path {directory / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        # As root, nginx's workers would switch to "nobody", who cannot enter the test's
        # private temporary directory: run them as whoever runs the test.
        user = "user root;" if os.geteuid() == 0 else ""
        config = directory / "nginx.conf"
        config.write_text(
            f"{user}\nworker_processes 1;\npid {directory / 'nginx.pid'};\nerror_log stderr warn;\n"
            f"events {{ worker_connections 64; }}\n"
            f"http {{\naccess_log off;\n{temp}\n{server}\n}}\n"
        )
        self.url = f"https://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [NGINX, "-e", "stderr", "-p", str(directory), "-c", str(config), "-g", "daemon off;"],
            stderr=subprocess.PIPE,
            text=True,
        )

    def wait_ready(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nginx exited ({self.process.returncode}): {self.process.stderr.read()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"nginx did not listen on {self.port} within {timeout} s")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()  # nginx's fast shutdown
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process.stderr.close()


class FromAddress(HTTPAdapter):
    """Connects from one loopback address: a different client, as nginx sees it."""

    def __init__(self, address: str) -> None:
        self.address = address
        super().__init__()

    def init_poolmanager(self, *args, **kwargs) -> None:
        kwargs["source_address"] = (self.address, 0)
        super().init_poolmanager(*args, **kwargs)


def browser_at(address: str, desk: Nginx) -> requests.Session:
    browser = requests.Session()
    browser.mount("https://", FromAddress(address))
    browser.trust_env = False  # no proxy and no CA bundle from the environment: loopback, our certificate
    browser.verify = str(desk.certificate[0])
    return browser


def manage(env: dict[str, str], *args: str) -> None:
    result = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.fixture(scope="module")
def desk(tmp_path_factory):
    """nginx (the document's block) in front of gunicorn (the document's environment)."""
    _require_nginx()
    directory = tmp_path_factory.mktemp("behind-a-proxy")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_URL", "REDIS_URL"))}
    env.update(documented_environment())
    assert env["DJANGO_TRUSTED_PROXIES"] == "127.0.0.1"
    env.update(
        DJANGO_DEBUG="0",
        DJANGO_SECRET_KEY="behind-a-proxy-test-only-secret-key-0123456789abcdefghijklmnop",
        DATABASE_URL=f"sqlite:///{directory / 'desk.sqlite3'}",
        DJANGO_STATIC_MANIFEST="0",
        DJANGO_LOG_LEVEL="WARNING",
        DJANGO_LOGIN_ADDRESS_LIMIT=str(ADDRESS_LIMIT),
        WEB_CONCURRENCY="1",
        GUNICORN_THREADS="4",
    )
    manage(env, "migrate", "--noinput", "-v", "0")
    # Pat's password is stored with few iterations: the sign-in is quick, the hasher is production's.
    manage(
        env,
        "shell",
        "-c",
        "from django.contrib.auth.hashers import PBKDF2PasswordHasher as H; "
        "from django.contrib.auth.models import User; h = H(); "
        f"User.objects.create(username='pat', password=h.encode({PASSWORD!r}, h.salt(), iterations=1000))",
    )
    # The names people reach the dashboard by: here nginx's loopback address and port.
    nginx_port = free_port()
    env.update(DJANGO_ALLOWED_HOSTS="127.0.0.1", DJANGO_CSRF_TRUSTED_ORIGINS=f"https://127.0.0.1:{nginx_port}")
    gunicorn = Server(env)
    nginx = Nginx(directory, port=nginx_port, upstream=gunicorn.url)
    try:
        gunicorn.wait_ready()
        nginx.wait_ready()
        yield nginx
    finally:
        nginx.stop()
        gunicorn.stop()


def login_page(browser: requests.Session, base: str) -> str:
    page = browser.get(base + "/accounts/login/", timeout=30)
    assert page.status_code == 200, page.text[:500]
    return page.text


def log_in(browser: requests.Session, base: str, username: str, password: str, **headers: str) -> requests.Response:
    login_page(browser, base)
    return browser.post(
        base + "/accounts/login/",
        data={"username": username, "password": password},
        headers={"X-CSRFToken": browser.cookies["csrftoken"], "Referer": base + "/accounts/login/", **headers},
        allow_redirects=False,
        timeout=30,
    )


def test_behind_nginx_each_client_is_counted_by_its_own_address(desk):
    attacker = browser_at(ATTACKER, desk)
    for i in range(ADDRESS_LIMIT):
        # The attacker even claims Pat's address: nginx appends the real one, which counts.
        failed = log_in(attacker, desk.url, f"guess-{i}", "wrong", **{"X-Forwarded-For": PAT})
        assert failed.status_code in (200, 429), failed.text[:500]  # the form was read, not refused

    # Pat, who never failed, signs in. Before, gunicorn's REMOTE_ADDR (nginx) was everyone's
    # address, and Pat was locked out (429) with the attacker.
    pat = browser_at(PAT, desk)
    signed_in = log_in(pat, desk.url, "pat", PASSWORD)
    assert signed_in.status_code == 302, signed_in.text[:500]
    assert signed_in.headers["Location"] == "/"
    home = pat.get(desk.url + "/", allow_redirects=False, timeout=30)
    assert home.status_code == 200
    assert home.url.startswith("https://")  # X-Forwarded-Proto: no redirect loop, secure cookies

    # The attacker's own address is the one that now gets the sign-in check; Pat's is not.
    assert "data-challenge-seed" in login_page(attacker, desk.url)
    assert "data-challenge-seed" not in login_page(browser_at(PAT, desk), desk.url)


def test_the_document_s_settings_are_the_ones_tested():
    env = documented_environment()
    assert env["DJANGO_TRUSTED_PROXIES"] == "127.0.0.1"
    assert env["DJANGO_BEHIND_TLS_PROXY"] == "1"
    server = documented("nginx")
    assert "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;" in server
    assert "gunicorn -c dashboard/gunicorn_conf.py --bind 127.0.0.1:8000" in documented("sh")
