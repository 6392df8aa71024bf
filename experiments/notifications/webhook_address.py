"""A webhook's address: the one parser that decides what is stored, shown and posted to, and
where a post may go.

The settings form (may this be saved?), the hint (what may be shown of it) and the sender
(where to connect, what Host to send) all read a webhook URL through `parse_webhook_url`, so
the host a page shows and the audit chain records is the host the message goes to. What a
second parser could read another way is refused rather than interpreted: a backslash, a
user name or password, a fragment, anything outside printable ASCII, and host names some
programs read as numbers (0x7f000001, 2130706433, 127.1). Two other parsers (the standard
library's and urllib3's) must also agree with ours on scheme, host, port and path.

Where a post may go is decided on the addresses the host resolves to when it is sent:
loopback, private, link-local, unique-local, multicast, reserved and unspecified addresses
(IPv4, IPv6, and IPv4 carried inside IPv6) are refused unless they lie in one of the
networks the operator allows (NOTIFY_WEBHOOK_ALLOW_NETWORKS), and plain http:// goes only
to those networks. The sender connects to the very addresses checked here, so a second
lookup cannot send it elsewhere.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings
from django.views.decorators.debug import sensitive_variables
from urllib3.util import parse_url

from experiments.models import Workspace

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

WEBHOOK_URL_MAX_LENGTH = 2000
DEFAULT_PORTS = {"http": 80, "https": 443}
# The part after the host shows its last characters in the hint only when it is long
# enough that they give little of it away.
HINT_TAIL = 4
HINT_TAIL_MIN_REST = 16

# Readable answers, as constants so tests and the settings page can match them. None quotes the URL.
MSG_URL_TOO_LONG = f"That address is too long: a webhook address has at most {WEBHOOK_URL_MAX_LENGTH} characters."
MSG_URL_INVALID = "That is not a web address. Paste the whole webhook address, starting with https://."
MSG_URL_SCHEME = "The webhook address must start with https:// (or http://)."
MSG_URL_HOST = "The webhook address has no host name after https://."
MSG_URL_NOT_ASCII = (
    "The webhook address may hold only plain ASCII characters: write an international host name in its "
    "xn-- form and percent-encode the rest."
)
MSG_URL_BACKSLASH = "The webhook address must not contain a backslash (\\): programs disagree on where its host ends."
MSG_URL_CREDENTIALS = (
    "The webhook address must not contain @ (a user name or password): chat tools' webhook addresses never do."
)
MSG_URL_FRAGMENT = "The webhook address must not contain # (a fragment)."
MSG_URL_NUMERIC_HOST = "Write an IP address as four decimal numbers from 0 to 255 (like 203.0.113.7)."
MSG_URL_AMBIGUOUS = (
    "That address can be read in more than one way (programs disagree on its host, port or path), so it is refused."
)
MSG_URL_NOT_ALLOWED = (
    "That address leads to a loopback, private or otherwise local network address, which notifications may not "
    "reach. Use the public address your chat tool gave you."
)
MSG_URL_PLAIN_HTTP = "Use https://: plain http:// is only allowed to the networks the operator allows."

# What the delivery log says: what a person needs, never which local ports answer.
MSG_NOT_ALLOWED = "could not be delivered: its address is not a public internet address"
MSG_PLAIN_HTTP = "could not be delivered: plain http:// is not allowed to that address; use https://"
MSG_NOT_DELIVERED = "could not be delivered"

_HOST_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_NUMERIC_LABEL = re.compile(r"[0-9]+|0x[0-9a-f]*")
_PORT = re.compile(r"[0-9]{1,5}")
# IPv6 prefixes that carry an IPv4 address in their last 32 bits: IPv4-compatible (::/96)
# and NAT64's well-known prefix. IPv4-mapped, 6to4 and Teredo are ipaddress's own properties.
_CARRIES_IPV4 = (ipaddress.IPv6Network("::/96"), ipaddress.IPv6Network("64:ff9b::/96"))


class WebhookAddressError(ValueError):
    """A webhook URL that cannot be used; the message is a readable sentence that never quotes it."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True)
class WebhookAddress:
    """A webhook URL as read by parse_webhook_url: where to connect and what to ask for."""

    scheme: str  # "http" or "https"
    host: str  # a lower-case name, or an IP address's text (IPv6 without brackets)
    port: int
    target: str  # the path and query, as sent on the request line
    ip: IPAddress | None  # the host, when it is an IP address

    def __repr__(self) -> str:
        # The target is the secret part of a webhook address: never in a repr, a log or a debug page.
        return f"<WebhookAddress {self.scheme}://{self.authority}/…>"

    @property
    def authority(self) -> str:
        """The host as written in a URL or a Host header, with the port unless it is the scheme's own."""
        host = f"[{self.host}]" if self.ip is not None and self.ip.version == 6 else self.host
        return host if self.port == DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"


def _host(text: str) -> tuple[str, IPAddress | None]:
    """A URL's host (brackets kept around IPv6) as (lower-case name or address text, address or None)."""
    if text.startswith("["):
        inner = text[1:-1] if text.endswith("]") else ""
        try:
            if "%" in inner:  # a zone id names a local interface
                raise ValueError
            address = ipaddress.IPv6Address(inner)
        except ValueError:
            raise WebhookAddressError(MSG_URL_INVALID) from None
        return address.compressed, address
    name = text.lower()
    labels = name.split(".")
    if not name or len(name) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels):
        raise WebhookAddressError(MSG_URL_HOST if not name else MSG_URL_INVALID)
    if _NUMERIC_LABEL.fullmatch(labels[-1]):
        # A name ending in a number is an IPv4 address to browsers and to inet_aton, in forms
        # (hex, octal, fewer parts) that another program may read as a name: only the plain form.
        if len(labels) != 4 or not all(label.isdigit() and str(int(label)) == label for label in labels):
            raise WebhookAddressError(MSG_URL_NUMERIC_HOST)
        try:
            address = ipaddress.IPv4Address(name)
        except ValueError:
            raise WebhookAddressError(MSG_URL_NUMERIC_HOST) from None
        return address.compressed, address
    return name, None


@sensitive_variables()
def parse_webhook_url(url: str) -> WebhookAddress:
    """Read a webhook URL, or raise WebhookAddressError saying why it cannot be one."""
    if len(url) > WEBHOOK_URL_MAX_LENGTH:
        raise WebhookAddressError(MSG_URL_TOO_LONG)
    if any(ord(ch) < 33 or ord(ch) == 127 for ch in url):
        raise WebhookAddressError(MSG_URL_INVALID)
    if not url.isascii():
        raise WebhookAddressError(MSG_URL_NOT_ASCII)
    scheme, separator, rest = url.partition("://")
    if not separator:
        named = re.match(r"([A-Za-z][A-Za-z0-9+.-]*):(?![0-9])", url)
        if named is None:
            raise WebhookAddressError(MSG_URL_INVALID)
        raise WebhookAddressError(MSG_URL_HOST if named.group(1).lower() in DEFAULT_PORTS else MSG_URL_SCHEME)
    scheme = scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise WebhookAddressError(MSG_URL_SCHEME if re.fullmatch(r"[a-z][a-z0-9+.-]*", scheme) else MSG_URL_INVALID)
    for forbidden, message in (("\\", MSG_URL_BACKSLASH), ("@", MSG_URL_CREDENTIALS), ("#", MSG_URL_FRAGMENT)):
        if forbidden in rest:
            raise WebhookAddressError(message)
    split = re.search(r"[/?]", rest)
    authority, target = (rest[: split.start()], rest[split.start() :]) if split else (rest, "")
    if not target.startswith("/"):
        target = "/" + target
    if not authority:
        raise WebhookAddressError(MSG_URL_HOST)
    if authority.endswith("]") or ":" not in authority:
        host_text, port_text = authority, ""
    else:
        host_text, _, port_text = authority.rpartition(":")
        if not _PORT.fullmatch(port_text) or not 0 < int(port_text) <= 65535:
            raise WebhookAddressError(MSG_URL_INVALID)
    host, ip = _host(host_text)
    address = WebhookAddress(
        scheme=scheme,
        host=host,
        port=int(port_text) if port_text else DEFAULT_PORTS[scheme],
        target=target,
        ip=ip,
    )
    if not _others_agree(url, address):
        raise WebhookAddressError(MSG_URL_AMBIGUOUS)
    return address


@sensitive_variables()
def _others_agree(url: str, address: WebhookAddress) -> bool:
    """Whether the standard library's and urllib3's parsers read `url` as we did."""
    try:
        stdlib = urlsplit(url)
        stdlib_read = (
            stdlib.scheme,
            stdlib.hostname or "",
            stdlib.port,
            (stdlib.path or "/") + (f"?{stdlib.query}" if stdlib.query else ""),
        )
        library = parse_url(url)
        library_read = (library.scheme or "", (library.host or "").strip("[]"), library.port, library.request_uri)
    except ValueError:
        return False
    expected = (address.scheme, address.host, address.port, address.target)
    return _normalised(stdlib_read) == expected and _normalised(library_read) == expected


def _normalised(read: tuple[str, str, int | None, str]) -> tuple[str, str, int | None, str]:
    """A parser's (scheme, host, port, target) in our spelling: lower case, default port made explicit."""
    scheme, host, port, target = read[0].lower(), read[1].lower(), read[2], read[3]
    with contextlib.suppress(ValueError):
        host = ipaddress.ip_address(host).compressed
    return scheme, host, port or DEFAULT_PORTS.get(scheme), target


@sensitive_variables()
def webhook_hint(url: str) -> str:
    """What may be shown of a webhook URL: scheme, host, and the last characters of a long rest,
    "https://hooks.slack.com/…x9Qz", never longer than the workspace's hint column."""
    address = parse_webhook_url(url)
    limit = Workspace._meta.get_field("webhook_url_hint").max_length
    tail = address.target[-HINT_TAIL:] if len(address.target) >= HINT_TAIL_MIN_REST else ""
    authority = address.authority
    room = limit - len(f"{address.scheme}:///…{tail}")
    if len(authority) > room:
        port = "" if address.port == DEFAULT_PORTS[address.scheme] else f":{address.port}"
        authority = authority[: room - len(port) - 1] + "…" + port
    return f"{address.scheme}://{authority}/…{tail}"


# --- Where a post may go ---------------------------------------------------------------------


def _carried_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, 6to4, Teredo, NAT64, compatible), if any."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if any(ip in network for network in _CARRIES_IPV4) and not ip.is_unspecified and not ip.is_loopback:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_public(ip: IPAddress) -> bool:
    """Whether `ip` is a public internet address: not loopback, private, link-local, unique-local,
    multicast, reserved or unspecified, and, for IPv6, not carrying an IPv4 address that is."""
    if isinstance(ip, ipaddress.IPv6Address):
        carried = _carried_ipv4(ip)
        if carried is not None:  # a connection to it reaches the IPv4 address it carries
            return is_public(carried)
        if ip.is_site_local:
            return False
    local = ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_multicast
    return ip.is_global and not (local or ip.is_reserved or ip.is_unspecified)


def allowed_networks() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """The networks the operator lets webhooks reach although they are not public
    (NOTIFY_WEBHOOK_ALLOW_NETWORKS, checked when settings load)."""
    return [ipaddress.ip_network(item, strict=False) for item in settings.NOTIFY_WEBHOOK_ALLOW_NETWORKS]


def _in_allowed_network(ip: IPAddress, networks: list) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == network.version and ip in network for network in networks)


@sensitive_variables()
def webhook_url_problem(url: str) -> str | None:
    """Why `url` cannot be saved as a webhook (a sentence that never quotes it), or None.

    The host is looked up now too, so an address that leads to a local network is refused
    when it is typed. A name that does not resolve (yet) is accepted: DNS can be down for a
    moment, and the delivery log says so if it stays that way.
    """
    try:
        address = parse_webhook_url(url)
        ips = resolve(address, deadline=time.monotonic() + settings.NOTIFY_WEBHOOK_TIMEOUT)
    except WebhookAddressError as exc:
        return exc.message
    except LookupFailed:
        return None
    problem = destination_problem(address, ips)
    return problem[0] if problem else None


def destination_problem(address: WebhookAddress, ips: list[IPAddress]) -> tuple[str, str] | None:
    """Why a post to `address` at `ips` may not go, as (message for the settings form, message for
    the delivery log); None when it may. Every address must pass, or none is used."""
    networks = allowed_networks()
    inside = [_in_allowed_network(ip, networks) for ip in ips]
    if not all(allowed or is_public(ip) for ip, allowed in zip(ips, inside, strict=True)):
        return MSG_URL_NOT_ALLOWED, MSG_NOT_ALLOWED
    if address.scheme == "http" and not all(inside):
        return MSG_URL_PLAIN_HTTP, MSG_PLAIN_HTTP
    return None


# --- Looking a host up, within the post's deadline ------------------------------------------------


class LookupFailed(Exception):
    """The host name could not be resolved in time (or at all)."""


def system_lookup(host: str, port: int) -> list[str]:
    """The addresses the system resolver gives for `host` (the seam tests replace)."""
    found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return [str(info[4][0]) for info in found]


# Tests put a resolver of their own here (tests.conftest), so no test depends on real DNS.
lookup: Callable[[str, int], list[str]] = system_lookup


def resolve(address: WebhookAddress, *, deadline: float) -> list[IPAddress]:
    """The addresses to connect to for `address`, in the resolver's order, found before
    `deadline` (a time.monotonic() value); LookupFailed otherwise.

    getaddrinfo cannot be given a timeout, so the lookup runs in a thread of its own that is
    left behind (it ends when the system resolver gives up) if it outlasts the deadline.
    """
    if address.ip is not None:
        return [address.ip]
    found: list[str] = []
    failed: list[BaseException] = []
    resolver = lookup

    def run() -> None:
        try:
            found.extend(resolver(address.host, address.port))
        except Exception as exc:  # any resolver error is "could not resolve"
            failed.append(exc)

    worker = threading.Thread(target=run, name="webhook-lookup", daemon=True)
    worker.start()
    worker.join(max(0.0, deadline - time.monotonic()))
    if worker.is_alive() or failed or not found:
        raise LookupFailed
    ips: list[IPAddress] = []
    for text in found:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
        if ip not in ips:
            ips.append(ip)
    return ips
