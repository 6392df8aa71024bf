"""Which address a request comes from: its peer, or behind trusted proxies the client they name.

Behind a reverse proxy every request's peer (REMOTE_ADDR) is the proxy, so anything
counted per address (the password throttle) would count everyone together. Each proxy
appends the address it received the request from to DJANGO_CLIENT_ADDRESS_HEADER
(nginx: `$proxy_add_x_forwarded_for`), so reading that header from the right, the hops
that are trusted proxies were written by our own proxies, and the first one that is not
is the client as our outermost proxy saw it. Everything left of it came from the client
and proves nothing. The header is read only when the peer itself is a trusted proxy.
"""

from __future__ import annotations

import ipaddress
from functools import cache

from django.conf import settings
from django.http import HttpRequest

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@cache
def _networks(proxies: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(item, strict=False) for item in proxies)


def parse_address(text: str) -> Address | None:
    """An address as proxies write it ("192.0.2.1", "192.0.2.1:5000", "[2001:db8::1]:443",
    "2001:db8::1"); IPv4 in IPv6 ("::ffff:192.0.2.1") as IPv4. None when it is none of these."""
    text = text.strip()
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_trusted_proxy(address: Address) -> bool:
    """Whether `address` is in DJANGO_TRUSTED_PROXIES."""
    return any(address in network for network in _networks(tuple(settings.TRUSTED_PROXIES)))


def from_trusted_proxy(request: HttpRequest) -> bool:
    """Whether the request's peer (REMOTE_ADDR) is one of DJANGO_TRUSTED_PROXIES."""
    peer = parse_address(request.META.get("REMOTE_ADDR", ""))
    return peer is not None and is_trusted_proxy(peer)


def client_address(request: HttpRequest) -> str:
    """The client's address: the peer, or, when the peer is a trusted proxy, the right-most
    address in DJANGO_CLIENT_ADDRESS_HEADER that is not a trusted proxy.

    When every hop is a trusted proxy the left-most is the client; a hop that is not an
    address means the header was not written by our proxies as configured, and the peer
    is used.
    """
    peer = request.META.get("REMOTE_ADDR", "")
    name = settings.CLIENT_ADDRESS_HEADER
    if not name or not from_trusted_proxy(request):
        return peer
    hops = [hop for hop in request.headers.get(name, "").split(",") if hop.strip()]
    client = None
    for hop in reversed(hops):
        client = parse_address(hop)
        if client is None:
            return peer
        if not is_trusted_proxy(client):
            break
    return str(client) if client is not None else peer
