"""The webhook channel: a Slack-compatible incoming webhook, posted {"text": ...}.

The webhook URL is a secret (whoever holds it can post into the channel): it is stored only
sealed (Fernet, under a key derived from SECRET_KEY; SECRET_KEY_FALLBACKS still open older
seals, which are sealed again under the current key when a message is sent) and shown only
as a hint.
Where a post may go, and what of the URL may be shown, is experiments.notifications.
webhook_address's to decide.

A post is one short HTTP/1.1 exchange over a socket of our own, connected to the address
that was checked (never looked up a second time), with one deadline for all of it: the
lookup, connecting, TLS, sending and the status line of the answer. A receiver that drips
its answer a byte at a time is cut off at the deadline like one that never answers.
Errors are described in our own words, never with an exception's text.
"""

from __future__ import annotations

import base64
import errno
import json
import re
import selectors
import socket
import ssl
import time

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.views.decorators.debug import sensitive_variables

from experiments.models import Workspace
from experiments.notifications import webhook_address
from experiments.notifications.webhook_address import (
    MSG_NOT_DELIVERED,
    IPAddress,
    LookupFailed,
    WebhookAddress,
    WebhookAddressError,
)

USER_AGENT = "Experiment Desk notifications"
# An answer's status line is all we read; a server that sends more before it is refused.
STATUS_LINE_MAX = 8192

MSG_WEBHOOK_UNREADABLE = (
    "The webhook address can no longer be read: the dashboard's secret key changed since it was saved. "
    "A workspace admin must set the webhook again on the workspace settings page."
)
MSG_WEBHOOK_REMOVED = "The webhook was removed from the workspace settings before this message could be sent."
MSG_HTTP_STATUS = "HTTP {status} from the webhook"
MSG_HTTP_REDIRECT = "HTTP {status} from the webhook (a redirect; redirects are not followed)"


class WebhookUnreadable(Exception):
    """A sealed webhook URL that neither SECRET_KEY nor any of SECRET_KEY_FALLBACKS opens."""


# --- The URL, sealed ---------------------------------------------------------------------


def _fernet_key(secret: str) -> bytes:
    # A key of its own, derived from SECRET_KEY, so a Fernet token is never a
    # by-product of anything else Django signs with that key.
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"experiment-desk webhook url v1")
    return base64.urlsafe_b64encode(hkdf.derive(secret.encode("utf-8")))


def _fernets() -> list[Fernet]:
    """The current key's Fernet first, then the fallbacks' (settings are read at each call, so a
    test or a reload that changes them is honoured)."""
    return [Fernet(_fernet_key(key)) for key in [settings.SECRET_KEY, *settings.SECRET_KEY_FALLBACKS]]


@sensitive_variables("url")
def webhook_seal(url: str) -> str:
    """The webhook URL sealed under the current SECRET_KEY (text safe to store)."""
    return _fernets()[0].encrypt(url.encode("utf-8")).decode("ascii")


@sensitive_variables()
def webhook_open(sealed: str) -> str:
    """The webhook URL from its sealed form; WebhookUnreadable when no key opens it."""
    try:
        return MultiFernet(_fernets()).decrypt(sealed.encode("ascii")).decode("utf-8")
    except (InvalidToken, ValueError):
        raise WebhookUnreadable(MSG_WEBHOOK_UNREADABLE) from None


@sensitive_variables()
def webhook_resealed(sealed: str) -> str | None:
    """`sealed` sealed again under the current key when only a fallback key opens it; None when
    the current key already does. WebhookUnreadable when no key opens it."""
    current, *_ = fernets = _fernets()
    token = sealed.encode("ascii", errors="replace")
    try:
        current.decrypt(token)
        return None
    except InvalidToken:
        pass
    try:
        return MultiFernet(fernets).rotate(token).decode("ascii")
    except (InvalidToken, ValueError):
        raise WebhookUnreadable(MSG_WEBHOOK_UNREADABLE) from None


RESEALED = "resealed"
CURRENT = "current"
UNREADABLE = "unreadable"
NO_WEBHOOK = "none"


def webhook_reseal_saved(*, workspace: Workspace) -> str:
    """Seal the workspace's webhook again under the current key if only a fallback key opens it.

    Returns RESEALED, CURRENT (already under the current key), UNREADABLE or NO_WEBHOOK. The
    write is a compare-and-set on the old seal, so an admin who saved a new webhook meanwhile
    keeps it; the webhook itself (and so its hint and the audit trail) does not change.
    """
    sealed = workspace.webhook_url_sealed
    if not sealed:
        return NO_WEBHOOK
    try:
        resealed = webhook_resealed(sealed)
    except WebhookUnreadable:
        return UNREADABLE
    if resealed is None:
        return CURRENT
    if Workspace.objects.filter(pk=workspace.pk, webhook_url_sealed=sealed).update(webhook_url_sealed=resealed):
        workspace.webhook_url_sealed = resealed
    return RESEALED


def webhook_readable(sealed: str) -> bool:
    """Whether a sealed webhook URL still opens (the settings page warns when not)."""
    try:
        webhook_open(sealed)
    except WebhookUnreadable:
        return False
    return True


# --- Text for chat tools -----------------------------------------------------------------


# Words that ping a whole channel in Slack-compatible tools that are not Slack (Mattermost,
# Rocket.Chat, Discord). A zero-width space after the @ leaves the word readable and inert.
_CHANNEL_MENTION = re.compile(r"@(?=(?:channel|here|everyone|all)\b)", re.IGNORECASE)
# A Markdown link or image needs "](" (or "][" / "]:" for a reference) with nothing between.
_MARKDOWN_LINK = re.compile(r"\](?=[(\[:])")
ZERO_WIDTH_SPACE = "\u200b"


def slack_escape(text: str) -> str:
    """Escape the three characters Slack reads as markup (&, <, >)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def chat_inert(text: str) -> str:
    """`text` with channel-wide mentions and Markdown links and images made inert, for every
    Slack-compatible receiver (Slack's own markup is slack_escape's)."""
    text = _CHANNEL_MENTION.sub("@" + ZERO_WIDTH_SPACE, text)
    return _MARKDOWN_LINK.sub("]" + ZERO_WIDTH_SPACE, text)


def webhook_text(subject: str, body: str) -> str:
    """The text a Slack-compatible webhook posts: the subject in bold, then the body, with chat
    markup made inert so no name from Mixpanel can ping a channel or make a link."""
    return slack_escape(chat_inert(f"*{subject}*\n{body}"))


# --- Sending -----------------------------------------------------------------------------


class _Undelivered(Exception):
    """Internal: the exchange failed (no connection, a timeout, TLS, a broken answer)."""


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise _Undelivered
    return left


def _wait(selector: selectors.BaseSelector, conn: socket.socket, events: int, deadline: float) -> None:
    selector.modify(conn, events)
    if not selector.select(_remaining(deadline)):
        raise _Undelivered


def _connect(ip: IPAddress, address: WebhookAddress, deadline: float) -> tuple[socket.socket, selectors.BaseSelector]:
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    raw = socket.socket(family, socket.SOCK_STREAM)
    raw.setblocking(False)
    selector = selectors.DefaultSelector()
    selector.register(raw, selectors.EVENT_WRITE)
    try:
        code = raw.connect_ex((str(ip), address.port))
        if code not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK):
            raise _Undelivered
        _wait(selector, raw, selectors.EVENT_WRITE, deadline)
        if raw.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
            raise _Undelivered
        if address.scheme == "http":
            return raw, selector
        context = ssl.create_default_context()
        selector.unregister(raw)
        conn = context.wrap_socket(raw, server_hostname=address.host, do_handshake_on_connect=False)
        selector.register(conn, selectors.EVENT_READ)
        while True:
            try:
                conn.do_handshake()
                return conn, selector
            except ssl.SSLWantReadError:
                _wait(selector, conn, selectors.EVENT_READ, deadline)
            except ssl.SSLWantWriteError:
                _wait(selector, conn, selectors.EVENT_WRITE, deadline)
    except (OSError, _Undelivered):
        selector.close()
        raw.close()
        raise _Undelivered from None


def _exchange(conn: socket.socket, selector: selectors.BaseSelector, request: bytes, deadline: float) -> int:
    """Send `request` and read the answer's status code, each step within `deadline`."""
    view = memoryview(request)
    while view:
        try:
            view = view[conn.send(view) :]
        except (BlockingIOError, ssl.SSLWantWriteError):
            _wait(selector, conn, selectors.EVENT_WRITE, deadline)
        except ssl.SSLWantReadError:
            _wait(selector, conn, selectors.EVENT_READ, deadline)
    answer = b""
    while b"\n" not in answer:
        try:
            chunk = conn.recv(1024)
        except (BlockingIOError, ssl.SSLWantReadError):
            _wait(selector, conn, selectors.EVENT_READ, deadline)
            continue
        except ssl.SSLWantWriteError:
            _wait(selector, conn, selectors.EVENT_WRITE, deadline)
            continue
        if not chunk or len(answer) > STATUS_LINE_MAX:
            raise _Undelivered
        answer += chunk
        _remaining(deadline)  # a receiver dripping its answer stops here
    status = re.match(rb"HTTP/1\.[01] ([1-5][0-9][0-9])[ \r\n]", answer)
    if status is None:
        raise _Undelivered
    return int(status.group(1))


def _request(address: WebhookAddress, text: str) -> bytes:
    body = json.dumps({"text": text}).encode("utf-8")
    head = (
        f"POST {address.target} HTTP/1.1\r\n"
        f"Host: {address.authority}\r\n"
        f"User-Agent: {USER_AGENT}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


@sensitive_variables()
def post_webhook(url: str, text: str) -> tuple[str, bool]:
    """POST {"text": text} to the webhook within NOTIFY_WEBHOOK_TIMEOUT seconds in all.

    ("", _) when it answered 2xx; else (what went wrong in our words, whether trying again
    may help). An address that is not allowed is refused before any connection is made.
    """
    deadline = time.monotonic() + settings.NOTIFY_WEBHOOK_TIMEOUT
    try:
        address = webhook_address.parse_webhook_url(url)
        ips = webhook_address.resolve(address, deadline=deadline)
    except WebhookAddressError as exc:
        return exc.message, False
    except LookupFailed:
        return MSG_NOT_DELIVERED, True
    problem = webhook_address.destination_problem(address, ips)
    if problem:
        return problem[1], False
    request = _request(address, text)
    for ip in ips:  # the checked addresses in the resolver's order; the next one if one cannot be reached
        try:
            conn, selector = _connect(ip, address, deadline)
        except _Undelivered:
            continue
        try:
            status = _exchange(conn, selector, request, deadline)
        except (OSError, _Undelivered):
            return MSG_NOT_DELIVERED, True
        finally:
            selector.close()
            conn.close()
        if 200 <= status < 300:
            return "", False
        if 300 <= status < 400:
            return MSG_HTTP_REDIRECT.format(status=status), True
        return MSG_HTTP_STATUS.format(status=status), True
    return MSG_NOT_DELIVERED, True


def send(*, sealed: str, text: str) -> tuple[str, bool]:
    """Post `text` to the webhook sealed in `sealed`: ("", _) when it took it; else (what went
    wrong, whether trying again may help)."""
    if not sealed:
        return MSG_WEBHOOK_REMOVED, False
    try:
        url = webhook_open(sealed)
    except WebhookUnreadable:
        return MSG_WEBHOOK_UNREADABLE, False
    return post_webhook(url, text)
