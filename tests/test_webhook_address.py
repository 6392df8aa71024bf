"""Where a webhook may post: one parser decides what is stored, shown and posted to; the host is
looked up once, its addresses checked (no loopback, private, link-local, unique-local, multicast
or unspecified address unless the operator allows its network; plain http:// only there), the
connection made to the address checked, and the whole post kept within one deadline.

Real receivers run on 127.0.0.1 (tests/webhook_receiver.py); names resolve through the test
resolver (tests.conftest.FakeDNS), never through real DNS.
"""

from __future__ import annotations

import datetime as dt
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from experiments.notifications import webhook, webhook_address
from experiments.notifications.webhook_address import (
    MSG_NOT_ALLOWED,
    MSG_NOT_DELIVERED,
    MSG_PLAIN_HTTP,
    MSG_URL_NOT_ALLOWED,
    MSG_URL_PLAIN_HTTP,
)

PUBLIC = "93.184.215.14"  # any globally routable address: the test resolver hands it out, nothing connects to it
SLACK = "https://hooks.slack.com/services/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"


def without_allowed_networks(settings) -> None:
    settings.NOTIFY_WEBHOOK_ALLOW_NETWORKS = []


# --- One parser -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ftp://hooks.example.com/x", webhook_address.MSG_URL_SCHEME),
        ("javascript:alert(1)", webhook_address.MSG_URL_SCHEME),
        ("hooks.slack.com/services/x", webhook_address.MSG_URL_INVALID),
        ("https:///services/x", webhook_address.MSG_URL_HOST),
        ("https:/services/x", webhook_address.MSG_URL_HOST),
        ("https://hooks.example.com:port/x", webhook_address.MSG_URL_INVALID),
        ("https://hooks.example.com:/x", webhook_address.MSG_URL_INVALID),
        ("https://hooks.example.com:70000/x", webhook_address.MSG_URL_INVALID),
        ("https://hooks.example.com/a b", webhook_address.MSG_URL_INVALID),
        ("https://hooks.example.com/\x00", webhook_address.MSG_URL_INVALID),
        ("https://hooks.example.com/" + "x" * 2000, webhook_address.MSG_URL_TOO_LONG),
        ("https://hooks.example.com/caf\u00e9", webhook_address.MSG_URL_NOT_ASCII),
        ("https://b\u00fccher.example/h", webhook_address.MSG_URL_NOT_ASCII),
        # Where the host ends is what parsers disagree on: none of this is guessed at.
        ("http://127.0.0.1:9303\\@hooks.slack.com/services/x", webhook_address.MSG_URL_BACKSLASH),
        ("https://hooks.slack.com\\.evil.example/x", webhook_address.MSG_URL_BACKSLASH),
        ("https://alice:pa55word@hooks.example.com/services/x", webhook_address.MSG_URL_CREDENTIALS),
        ("https://hooks.slack.com@evil.example/services/x", webhook_address.MSG_URL_CREDENTIALS),
        ("https://hooks.example.com/services/x#frag", webhook_address.MSG_URL_FRAGMENT),
        ("https://hooks.example.com/a/../b", webhook_address.MSG_URL_AMBIGUOUS),
        ("https://hooks.example.com/a|b", webhook_address.MSG_URL_AMBIGUOUS),
        ("https://hooks_example.com/x", webhook_address.MSG_URL_INVALID),
        ("https://[fe80::1%25eth0]/x", webhook_address.MSG_URL_INVALID),
        # Host names that are numbers to some programs and names to others.
        ("http://0x7f000001/x", webhook_address.MSG_URL_NUMERIC_HOST),
        ("http://2130706433/x", webhook_address.MSG_URL_NUMERIC_HOST),
        ("http://127.1/x", webhook_address.MSG_URL_NUMERIC_HOST),
        ("http://0177.0.0.1/x", webhook_address.MSG_URL_NUMERIC_HOST),
        ("http://1.2.3.256/x", webhook_address.MSG_URL_NUMERIC_HOST),
        ("http://example.123/x", webhook_address.MSG_URL_NUMERIC_HOST),
    ],
)
def test_what_cannot_be_a_webhook_address_is_refused_in_words_that_never_quote_it(url, problem):
    assert webhook_address.webhook_url_problem(url) == problem
    assert url not in problem
    with pytest.raises(webhook_address.WebhookAddressError) as refused:
        webhook_address.parse_webhook_url(url)
    assert refused.value.message == problem


@pytest.mark.parametrize(
    ("url", "host", "port", "target"),
    [
        (SLACK, "hooks.slack.com", 443, "/services/T0AAAAAAA/B0BBBBBBB/zQ8kL2mN4pR6sT9uVwXyZab1"),
        ("HTTPS://Hooks.Example.COM", "hooks.example.com", 443, "/"),
        ("https://hooks.example.com?token=abc", "hooks.example.com", 443, "/?token=abc"),
        ("https://hooks.example.com:8443/a/b?c=d&e=%2F", "hooks.example.com", 8443, "/a/b?c=d&e=%2F"),
        ("https://xn--bcher-kva.example/h", "xn--bcher-kva.example", 443, "/h"),
        ("http://[2606:4700::1]:8080/x", "2606:4700::1", 8080, "/x"),
        ("https://93.184.215.14/x", "93.184.215.14", 443, "/x"),
    ],
)
def test_an_address_is_read_once_into_host_port_and_target(url, host, port, target):
    address = webhook_address.parse_webhook_url(url)
    assert (address.host, address.port, address.target) == (host, port, target)
    assert target not in repr(address) or target == "/"


@pytest.mark.parametrize(
    ("url", "hint"),
    [
        (SLACK, "https://hooks.slack.com/…Zab1"),
        ("HTTPS://Hooks.Example.com:8443/a/very/long/path/x9Qz", "https://hooks.example.com:8443/…x9Qz"),
        # A short rest would be mostly given away by its last characters: none shown.
        ("https://example.com/hook", "https://example.com/…"),
        ("http://[2606:4700::1]:8080/services/abcdefghijklmnop", "http://[2606:4700::1]:8080/…mnop"),
    ],
)
def test_the_hint_shows_scheme_host_and_at_most_the_last_four_characters(url, hint):
    assert webhook_address.webhook_hint(url) == hint


def test_the_hint_of_the_longest_host_with_a_port_fits_its_80_character_column():
    host = ".".join(["h" * 63, "o" * 63, "s" * 63, "t" * 53, "example"])
    assert len(host) == 253
    hint = webhook_address.webhook_hint(f"https://{host}:65535/services/" + "p" * 40)
    assert len(hint) <= 80
    assert hint.startswith("https://hhhh")
    assert hint.endswith("…:65535/…pppp")
    # Before, a host over 60 characters kept its first 60, an ellipsis and the port: 81 characters.
    assert len(webhook_address.webhook_hint(f"https://{'h' * 61}.example:65535/" + "p" * 20)) == 80


def test_the_host_shown_is_the_host_posted_to(webhook_receiver, fake_dns):
    """The address a page shows and the chain records (the hint) names the host that receives
    the post, with the path it asked for."""
    fake_dns.add("chat.internal", "127.0.0.1")
    port = webhook_receiver.url.split(":")[2].split("/")[0]
    url = f"http://chat.internal:{port}/services/{webhook_receiver.token}"
    assert webhook_address.webhook_hint(url) == f"http://chat.internal:{port}/…{webhook_receiver.token[-4:]}"
    assert webhook.post_webhook(url, "hello") == ("", False)
    (received,) = webhook_receiver.messages()
    assert received.host == f"chat.internal:{port}"
    assert received.path == f"/services/{webhook_receiver.token}"


# --- Where a post may go ------------------------------------------------------------------------

# What an admin tried: the server's own loopback, the cloud's metadata address, and the
# forms that spell them differently.
LOCAL_URLS = [
    "http://127.0.0.1:{port}/services/x",
    "http://[::1]:{port}/services/x",
    "http://[::ffff:127.0.0.1]:{port}/services/x",
    "http://169.254.169.254/latest/meta-data/",
    "http://0.0.0.0:{port}/services/x",
    "http://localhost:{port}/services/x",
    "https://127.0.0.1:{port}/services/x",
    "https://localhost/services/x",
    "https://10.1.2.3/services/x",
    "https://[fd00::1]/services/x",
]


@pytest.mark.parametrize("url", LOCAL_URLS)
def test_a_local_address_is_refused_when_saved(url, settings, webhook_receiver_server):
    without_allowed_networks(settings)
    url = url.format(port=webhook_receiver_server.url.rsplit(":", 1)[1])
    assert webhook_address.webhook_url_problem(url) in {MSG_URL_NOT_ALLOWED, MSG_URL_PLAIN_HTTP}


@pytest.mark.parametrize(
    "url",
    [
        *LOCAL_URLS,
        "http://0x7f000001:{port}/services/x",
        "http://2130706433:{port}/services/x",
        "http://127.1:{port}/services/x",
        "http://ok:secret@127.0.0.1:{port}/services/x",
        "http://127.0.0.1:{port}\\@hooks.slack.com/services/x",
    ],
)
def test_a_post_to_a_local_address_is_refused_before_connecting(url, settings, webhook_receiver):
    """Each of these reached the receiver on 127.0.0.1 before, and the delivery log's "sent",
    "could not connect" or "timed out" told the admin which local ports answer."""
    without_allowed_networks(settings)
    url = url.format(port=webhook_receiver.url.rsplit(":", 1)[1].split("/")[0])
    error, may_retry = webhook.post_webhook(url, "hello")
    assert error
    assert may_retry is False
    assert "connect" not in error
    assert "timed out" not in error
    assert webhook_receiver.messages() == []


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.255.255.254",
        "10.0.0.1",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",  # noqa: S104 -- an address a name resolves to here, not one bound to
        "224.0.0.1",
        "239.255.255.250",
        "255.255.255.255",
        "240.0.0.1",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "fd12:3456::1",
        "fec0::1",
        "ff02::1",
        "ff0e::1",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "::ffff:10.0.0.1",
        "::127.0.0.1",
        "64:ff9b::7f00:1",
        "64:ff9b::a9fe:a9fe",
        "2002:7f00:1::1",
        "2002:a00:1::1",
        "2001:db8::1",
    ],
)
def test_a_name_that_resolves_to_a_local_address_is_refused_when_saved_and_when_sent(address, settings, fake_dns):
    without_allowed_networks(settings)
    fake_dns.add("hooks.example.com", address)
    url = "https://hooks.example.com/services/T0/B0/abcdefghijkl"
    assert webhook_address.webhook_url_problem(url) == MSG_URL_NOT_ALLOWED
    assert webhook.post_webhook(url, "hello") == (MSG_NOT_ALLOWED, False)


def test_one_local_address_among_public_ones_is_enough_to_refuse(settings, fake_dns):
    without_allowed_networks(settings)
    fake_dns.add("hooks.example.com", PUBLIC, "10.0.0.7")
    assert webhook.post_webhook("https://hooks.example.com/x", "hello") == (MSG_NOT_ALLOWED, False)


@pytest.mark.parametrize("address", [PUBLIC, "2606:4700::6810:84e5", "64:ff9b::5db8:d70e", "::ffff:93.184.215.14"])
def test_a_public_address_over_https_may_be_saved(address, settings, fake_dns):
    without_allowed_networks(settings)
    fake_dns.add("hooks.example.com", address)
    assert webhook_address.webhook_url_problem("https://hooks.example.com/services/x") is None


def test_plain_http_to_a_public_address_is_refused(settings, fake_dns):
    without_allowed_networks(settings)
    fake_dns.add("hooks.example.com", PUBLIC)
    url = "http://hooks.example.com/services/x"
    assert webhook_address.webhook_url_problem(url) == MSG_URL_PLAIN_HTTP
    assert webhook.post_webhook(url, "hello") == (MSG_PLAIN_HTTP, False)


def test_a_name_that_does_not_resolve_may_be_saved_and_is_not_delivered(fake_dns):
    """DNS may be down for a moment when an admin saves; the delivery log says if it stays so."""
    url = "https://hooks.unknown.example/services/x"
    assert webhook_address.webhook_url_problem(url) is None
    assert webhook.post_webhook(url, "hello") == (MSG_NOT_DELIVERED, True)


def test_allowed_networks_may_be_reached_over_http_and_nothing_else_is(settings, webhook_receiver, fake_dns):
    settings.NOTIFY_WEBHOOK_ALLOW_NETWORKS = ["10.20.0.0/16"]
    fake_dns.add("chat.corp", "10.20.3.4")
    assert webhook_address.webhook_url_problem("http://chat.corp/hooks/x") is None
    assert webhook_address.webhook_url_problem("http://10.21.0.1/hooks/x") == MSG_URL_NOT_ALLOWED
    assert webhook.post_webhook(webhook_receiver.url, "hello") == (MSG_NOT_ALLOWED, False)
    settings.NOTIFY_WEBHOOK_ALLOW_NETWORKS = ["127.0.0.0/8"]
    assert webhook.post_webhook(webhook_receiver.url, "hello") == ("", False)
    assert len(webhook_receiver.messages()) == 1


def test_the_connection_goes_to_the_address_checked_without_a_second_lookup(settings, webhook_receiver, fake_dns):
    """A name answering a public address to the check and a local one to the connection
    (DNS rebinding) cannot win: the host is looked up once, and that address is the one used."""
    fake_dns.add("chat.internal", "127.0.0.1")
    port = webhook_receiver.url.rsplit(":", 1)[1].split("/")[0]
    assert webhook.post_webhook(f"http://chat.internal:{port}/services/x", "hello") == ("", False)
    assert fake_dns.lookups == ["chat.internal"]
    assert len(webhook_receiver.messages()) == 1


def test_a_name_rebound_to_a_local_address_after_saving_is_refused_when_sent(settings, webhook_receiver, fake_dns):
    without_allowed_networks(settings)
    fake_dns.add("hooks.example.com", PUBLIC)
    port = webhook_receiver.url.rsplit(":", 1)[1].split("/")[0]
    url = f"https://hooks.example.com:{port}/services/x"
    assert webhook_address.webhook_url_problem(url) is None
    fake_dns.add("hooks.example.com", "127.0.0.1")
    assert webhook.post_webhook(url, "hello") == (MSG_NOT_ALLOWED, False)
    assert webhook_receiver.messages() == []


def test_networks_that_are_every_address_are_refused_in_the_setting(monkeypatch):
    from django.core.exceptions import ImproperlyConfigured

    from dashboard.settings import env_networks

    for value in ("0.0.0.0/0", "::/0", "10.0.0.0/8,0.0.0.0/0"):
        monkeypatch.setenv("NOTIFY_WEBHOOK_ALLOW_NETWORKS", value)
        with pytest.raises(ImproperlyConfigured, match="every address"):
            env_networks("NOTIFY_WEBHOOK_ALLOW_NETWORKS")
    monkeypatch.setenv("NOTIFY_WEBHOOK_ALLOW_NETWORKS", "not-a-network")
    with pytest.raises(ImproperlyConfigured, match="not-a-network"):
        env_networks("NOTIFY_WEBHOOK_ALLOW_NETWORKS")


# --- One deadline for the whole post -----------------------------------------------------------


def test_a_receiver_dripping_its_answer_is_cut_off_at_the_deadline(settings, webhook_receiver):
    """Before, the timeout was per socket read: a receiver sending a byte every 0.25 s held
    a post with a 1 s timeout for as long as it liked."""
    settings.NOTIFY_WEBHOOK_TIMEOUT = 1.0
    webhook_receiver.drip = 0.25
    started = time.monotonic()
    assert webhook.post_webhook(webhook_receiver.url, "hello") == (MSG_NOT_DELIVERED, True)
    elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 1.6
    assert len(webhook_receiver.messages()) == 1  # it arrived; the answer never finished


def test_a_receiver_that_never_answers_is_cut_off_at_the_deadline(settings, webhook_receiver):
    settings.NOTIFY_WEBHOOK_TIMEOUT = 0.5
    webhook_receiver.delay = 3.0
    started = time.monotonic()
    assert webhook.post_webhook(webhook_receiver.url, "hello") == (MSG_NOT_DELIVERED, True)
    assert time.monotonic() - started < 1.0


def test_a_slow_lookup_counts_against_the_same_deadline(settings, fake_dns, monkeypatch):
    settings.NOTIFY_WEBHOOK_TIMEOUT = 0.5
    release = threading.Event()

    def slow(host, port):
        release.wait(5)
        return ["127.0.0.1"]

    monkeypatch.setattr(webhook_address, "lookup", slow)
    started = time.monotonic()
    try:
        assert webhook.post_webhook("https://hooks.example.com/x", "hello") == (MSG_NOT_DELIVERED, True)
        assert time.monotonic() - started < 1.0
    finally:
        release.set()


# --- TLS to the address checked, verified against the name ----------------------------------------


def _certificate(tmp_path, name: str):
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


@pytest.fixture
def tls_receiver(tmp_path):
    """An HTTPS receiver on 127.0.0.1 whose certificate names chat.internal; yields (port, cert file, hosts seen)."""
    cert_path, key_path = _certificate(tmp_path, "chat.internal")
    hosts: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            hosts.append(self.headers.get("Host", ""))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], cert_path, hosts
    server.shutdown()
    server.server_close()


def test_https_goes_to_the_checked_address_and_verifies_the_certificate_for_the_name(
    tls_receiver, settings, fake_dns, monkeypatch
):
    port, cert_path, hosts = tls_receiver
    settings.NOTIFY_WEBHOOK_ALLOW_NETWORKS = ["127.0.0.0/8"]
    settings.NOTIFY_WEBHOOK_TIMEOUT = 3.0
    fake_dns.add("chat.internal", "127.0.0.1")
    fake_dns.add("other.internal", "127.0.0.1")
    # Not trusted yet: the certificate is checked, so nothing is delivered.
    assert webhook.post_webhook(f"https://chat.internal:{port}/hook", "hello") == (MSG_NOT_DELIVERED, True)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert_path))
    assert webhook.post_webhook(f"https://chat.internal:{port}/hook", "hello") == ("", False)
    assert hosts == [f"chat.internal:{port}"]
    # The same address under a name the certificate does not carry is refused by TLS.
    assert webhook.post_webhook(f"https://other.internal:{port}/hook", "hello") == (MSG_NOT_DELIVERED, True)
    assert len(hosts) == 1
