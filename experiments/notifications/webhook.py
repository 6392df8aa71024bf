"""The webhook channel: a Slack-compatible incoming webhook, posted {"text": ...}.

The webhook URL is a secret (whoever holds it can post into the channel): it is stored
only sealed (Fernet, under a key derived from SECRET_KEY, with SECRET_KEY_FALLBACKS still
opening older seals) and shown only as a hint. Errors are described in our own words,
never with the exception's text, which for requests names the URL.
"""

from __future__ import annotations

import base64
import contextvars
import logging
from urllib.parse import urlsplit

import requests
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.views.decorators.debug import sensitive_variables

WEBHOOK_URL_MAX_LENGTH = 2000
# The part of the URL after the host shows its last characters in the hint only when
# it is long enough that they give little of it away.
HINT_TAIL = 4
HINT_TAIL_MIN_REST = 16
HINT_HOST_MAX = 60
USER_AGENT = "Experiment Desk notifications"

# Readable answers, as constants so tests and the settings page can match them.
MSG_URL_TOO_LONG = f"That address is too long: a webhook address has at most {WEBHOOK_URL_MAX_LENGTH} characters."
MSG_URL_INVALID = "That is not a web address. Paste the whole webhook address, starting with https://."
MSG_URL_SCHEME = "The webhook address must start with https:// (or http://)."
MSG_URL_HOST = "The webhook address has no host name after https://."
MSG_WEBHOOK_UNREADABLE = (
    "The webhook address can no longer be read: the dashboard's secret key changed since it was saved. "
    "A workspace admin must set the webhook again on the workspace settings page."
)
MSG_WEBHOOK_REMOVED = "The webhook was removed from the workspace settings before this message could be sent."
MSG_TIMED_OUT = "timed out"
MSG_NO_CONNECTION = "could not connect"
MSG_TLS_FAILED = "could not connect securely (TLS)"
MSG_HTTP_STATUS = "HTTP {status} from the webhook"
MSG_HTTP_REDIRECT = "HTTP {status} from the webhook (a redirect; redirects are not followed)"
MSG_REQUEST_FAILED = "the request failed ({kind})"


class WebhookUnreadable(Exception):
    """A sealed webhook URL that neither SECRET_KEY nor any of SECRET_KEY_FALLBACKS opens."""


# --- The URL, sealed ---------------------------------------------------------------------


def _fernet_key(secret: str) -> bytes:
    # A key of its own, derived from SECRET_KEY, so a Fernet token is never a
    # by-product of anything else Django signs with that key.
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"experiment-desk webhook url v1")
    return base64.urlsafe_b64encode(hkdf.derive(secret.encode("utf-8")))


def _sealer() -> MultiFernet:
    keys = [settings.SECRET_KEY, *settings.SECRET_KEY_FALLBACKS]
    return MultiFernet([Fernet(_fernet_key(key)) for key in keys])


@sensitive_variables("url")
def webhook_seal(url: str) -> str:
    """The webhook URL sealed under the current SECRET_KEY (text safe to store)."""
    return _sealer().encrypt(url.encode("utf-8")).decode("ascii")


@sensitive_variables()
def webhook_open(sealed: str) -> str:
    """The webhook URL from its sealed form; WebhookUnreadable when no key opens it."""
    try:
        return _sealer().decrypt(sealed.encode("ascii")).decode("utf-8")
    except (InvalidToken, ValueError):
        raise WebhookUnreadable(MSG_WEBHOOK_UNREADABLE) from None


def webhook_readable(sealed: str) -> bool:
    """Whether a sealed webhook URL still opens (the settings page warns when not)."""
    try:
        webhook_open(sealed)
    except WebhookUnreadable:
        return False
    return True


@sensitive_variables("url")
def webhook_url_problem(url: str) -> str | None:
    """Why `url` cannot be a webhook address (a readable sentence that never quotes it), or None."""
    if len(url) > WEBHOOK_URL_MAX_LENGTH:
        return MSG_URL_TOO_LONG
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in url):
        return MSG_URL_INVALID
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError for a port that is not a number
    except ValueError:
        return MSG_URL_INVALID
    if parts.scheme.lower() not in ("http", "https"):
        return MSG_URL_SCHEME if parts.scheme else MSG_URL_INVALID
    if not parts.hostname:
        return MSG_URL_HOST
    return None


@sensitive_variables("url")
def webhook_hint(url: str) -> str:
    """What may be shown of a webhook URL: scheme, host, and the last characters of a long rest.

    "https://hooks.slack.com/…x9Qz". Never a user name or password given in the URL.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    if len(host) > HINT_HOST_MAX:
        host = host[:HINT_HOST_MAX] + "…"
    if ":" in host:  # an IPv6 address keeps its brackets, so a port after it reads as one
        host = f"[{host}]"
    if parts.port:
        host += f":{parts.port}"
    rest = url.split(parts.netloc, 1)[1] if parts.netloc else ""
    tail = rest[-HINT_TAIL:] if len(rest) >= HINT_TAIL_MIN_REST else ""
    return f"{parts.scheme.lower()}://{host}/…{tail}"


# --- Text for chat tools -----------------------------------------------------------------


def slack_escape(text: str) -> str:
    """Escape the three characters Slack reads as markup (&, <, >)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def webhook_text(subject: str, body: str) -> str:
    """The text a Slack-compatible webhook posts: the subject in bold, then the body, with
    Slack's control characters escaped so no name can ping a channel or make a link."""
    return slack_escape(f"*{subject}*\n{body}")


# --- Sending -----------------------------------------------------------------------------


# urllib3 logs each request's URL at DEBUG; a webhook's URL is a secret, so its lines
# are dropped while one is posted (only those: Mixpanel's stay, for debugging).
_POSTING_WEBHOOK: contextvars.ContextVar[bool] = contextvars.ContextVar("posting_webhook", default=False)
_URLLIB3_LOGGERS = ("urllib3.connectionpool", "urllib3.poolmanager", "urllib3.util.retry")


class _QuietWhilePostingWebhook(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not _POSTING_WEBHOOK.get()


_QUIET = _QuietWhilePostingWebhook()


@sensitive_variables("url")
def post_webhook(url: str, text: str) -> str:
    """POST {"text": text} to the webhook; "" when it answered 2xx, else what went wrong
    in our words (never the exception's text, which would name the URL)."""
    timeout = settings.NOTIFY_WEBHOOK_TIMEOUT
    for name in _URLLIB3_LOGGERS:
        logging.getLogger(name).addFilter(_QUIET)  # once: a logger keeps one copy of a filter
    quiet = _POSTING_WEBHOOK.set(True)
    try:
        # stream=True: the answer's body is never read, so a large one costs nothing.
        with requests.post(
            url,
            json={"text": text},
            headers={"User-Agent": USER_AGENT},
            timeout=(timeout, timeout),
            allow_redirects=False,
            stream=True,
        ) as response:
            status = response.status_code
    except requests.Timeout:
        return MSG_TIMED_OUT
    except requests.exceptions.SSLError:
        return MSG_TLS_FAILED
    except requests.ConnectionError:
        return MSG_NO_CONNECTION
    except Exception as exc:  # anything else requests or urllib3 raise: named by type only
        return MSG_REQUEST_FAILED.format(kind=type(exc).__name__)
    finally:
        _POSTING_WEBHOOK.reset(quiet)
    if 200 <= status < 300:
        return ""
    if 300 <= status < 400:
        return MSG_HTTP_REDIRECT.format(status=status)
    return MSG_HTTP_STATUS.format(status=status)


def send(*, sealed: str, text: str) -> tuple[str, bool]:
    """Post `text` to the webhook sealed in `sealed`: ("", _) when it took it; else (what went
    wrong, whether trying again may help)."""
    if not sealed:
        return MSG_WEBHOOK_REMOVED, False
    try:
        url = webhook_open(sealed)
    except WebhookUnreadable:
        return MSG_WEBHOOK_UNREADABLE, False
    return post_webhook(url, text), True
