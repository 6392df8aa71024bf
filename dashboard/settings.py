"""Settings for Experiment Desk.

Everything that differs between a laptop and production is read from the
environment by the small helpers below. They fail loudly, naming the variable,
so a typo stops start-up instead of silently meaning "off".
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from django.utils.csp import CSP
from pythonjsonlogger.core import RESERVED_ATTRS

from experiments.errorreports import init_error_reports
from experiments.secrets import SecretConfigError, read_secret

BASE_DIR = Path(__file__).resolve().parent.parent

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be one of 1/0, true/false, yes/no, on/off; got {raw!r}.")


def env_float(name: str, default: float, *, minimum: float = 0.0) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number; got {raw!r}.") from None
    if value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}; got {raw!r}.")
    return value


def env_int(name: str, default: int, *, minimum: int = 0) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number; got {raw!r}.") from None
    if value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}; got {raw!r}.")
    return value


def env_secret(name: str) -> str:
    """A secret from NAME, or from the file NAME_FILE names (a mounted secret); "" if neither."""
    try:
        return read_secret(name)
    except SecretConfigError as exc:
        raise ImproperlyConfigured(str(exc)) from None


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_networks(name: str, default: list[str] | None = None, *, what: str = "your proxies' addresses") -> list[str]:
    """Comma-separated IP addresses or networks. A /0 network is refused: it is every address
    (trusting every proxy would let anyone claim any identity or client address; letting anyone
    read what only an operator may; letting webhooks reach every network, this server's own too)."""
    items = env_list(name, default or [])
    for item in items:
        try:
            network = ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ImproperlyConfigured(
                f"{name} must list IP addresses or networks (e.g. 10.0.0.5,10.1.0.0/24); {item!r} is neither."
            ) from None
        if network.prefixlen == 0:
            raise ImproperlyConfigured(f"{name} must not contain {item!r}: that network is every address. List {what}.")
    return items


DEBUG = env_bool("DJANGO_DEBUG", False)

SECRET_KEY = env_str("DJANGO_SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY is required when DJANGO_DEBUG is off (set DJANGO_DEBUG=1 for local development)."
        )
    # Development only: never used when debug is off.
    SECRET_KEY = "django-insecure-development-only-key-do-not-use-in-production"  # noqa: S105

# Older keys that still open what they sealed (sessions, password resets, webhook addresses)
# while everything moves to the new key: several, separated by commas or white space.
SECRET_KEY_FALLBACKS = env_secret("DJANGO_SECRET_KEY_FALLBACKS").replace(",", " ").split()

ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["127.0.0.1", "localhost"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.humanize",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django_htmx",
    "axes",
    # Before django_tasks_db: its db_worker command is ours, with housekeeping (experiments.services.worker).
    "experiments",
    "django_tasks_db",
]

MIDDLEWARE = [
    # First, so every response (redirects and errors too) carries the request id and is logged.
    "experiments.observability.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "experiments.signin.middleware.TrustedHeaderMiddleware",
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "experiments.signin.middleware.SessionTimeoutMiddleware",
    "experiments.signin.middleware.SSORecheckMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django.middleware.csp.ContentSecurityPolicyMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "experiments.middleware.PrivateResponsesMiddleware",
    # Last (innermost), so it sees the answer of every login view (the admin's too) and turns
    # a refused attempt into the cool-off page, which the middleware above still marks private.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "dashboard.urls"
WSGI_APPLICATION = "dashboard.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.csp",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# Database: SQLite file by default; PostgreSQL (production) via DATABASE_URL.
_default_db_url = f"sqlite:///{BASE_DIR / 'db.sqlite3'}"
# Keep each thread's connection between requests: dj-database-url's default (0) means a
# new connection, and on PostgreSQL a new server backend, for every request.
_conn_max_age = env_int("DJANGO_CONN_MAX_AGE", 60)
try:
    DATABASES = {
        "default": dj_database_url.parse(
            env_str("DATABASE_URL", _default_db_url) or _default_db_url,
            conn_max_age=_conn_max_age,
            conn_health_checks=True,
        )
    }
except Exception as exc:  # dj-database-url raises several types; name the variable.
    raise ImproperlyConfigured(f"DATABASE_URL is not a valid database URL: {exc}") from None
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = {
        # WAL lets readers proceed while one writer writes; IMMEDIATE takes the
        # write lock at BEGIN so two writers queue instead of failing mid-transaction.
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env_str("REDIS_URL")
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
# Sessions: with Redis, read from it and written through to the database, which stays the
# record (a page then starts without a session query). With only a per-process memory cache
# a logout in one process would not reach another's copy, so sessions stay in the database.
SESSION_ENGINE = "django.contrib.sessions.backends." + ("cached_db" if REDIS_URL else "db")

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]


LANGUAGE_CODE = "en"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
# Hashed, compressed files in production; tests and development need no collectstatic.
_manifest = env_bool("DJANGO_STATIC_MANIFEST", not DEBUG)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if _manifest
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
WHITENOISE_USE_FINDERS = not _manifest

# HTTPS hardening: on by default whenever debug is off.
_https = env_bool("DJANGO_HTTPS", not DEBUG)
SECURE_SSL_REDIRECT = _https
SESSION_COOKIE_SECURE = _https
CSRF_COOKIE_SECURE = _https
SECURE_HSTS_SECONDS = env_int("DJANGO_HSTS_SECONDS", 31536000 if _https else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = _https
SECURE_HSTS_PRELOAD = _https
if env_bool("DJANGO_BEHIND_TLS_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"

# Content Security Policy, enforced. Every <script> carries the request's nonce;
# no inline styles or style attributes exist in our templates.
SECURE_CSP = {
    "default-src": [CSP.SELF],
    "script-src": [CSP.SELF, CSP.NONCE],
    "style-src": [CSP.SELF],
    "img-src": [CSP.SELF, "data:"],
    "connect-src": [CSP.SELF],
    "font-src": [CSP.SELF],
    "object-src": [CSP.NONE],
    "base-uri": [CSP.NONE],
    "frame-ancestors": [CSP.NONE],
    "form-action": [CSP.SELF],
}


# --- Mixpanel -------------------------------------------------------------
# Credentials are read by experiments.mixpanel when a client is built, never here,
# so they never sit in django.conf.settings (which debug pages can show).
MIXPANEL_API_BASE_URL = env_str("MIXPANEL_API_BASE_URL")
MIXPANEL_CONNECT_TIMEOUT = env_float("MIXPANEL_CONNECT_TIMEOUT", 3.05, minimum=0.01)
MIXPANEL_READ_TIMEOUT = env_float("MIXPANEL_READ_TIMEOUT", 10.0, minimum=0.01)
# Total wall-clock budget of one call, including a body that trickles in slowly.
MIXPANEL_DEADLINE = env_float("MIXPANEL_DEADLINE", 15.0, minimum=0.05)
# State-changing calls (force conclude) get longer: Mixpanel's edge allows App API calls
# about 120 s, and a write cut off early may still be applied upstream.
MIXPANEL_WRITE_DEADLINE = env_float("MIXPANEL_WRITE_DEADLINE", 60.0, minimum=0.05)
# One experiment's answer is read into memory; the list is parsed as it streams in and
# only a summary per experiment is kept, so its cap is about time, not memory:
# 10,000 experiments of ~3 KB each are ~30 MB.
MIXPANEL_MAX_RESPONSE_BYTES = env_int("MIXPANEL_MAX_RESPONSE_BYTES", 5 * 1024 * 1024, minimum=1024)
MIXPANEL_MAX_LIST_BYTES = env_int("MIXPANEL_MAX_LIST_BYTES", 128 * 1024 * 1024, minimum=1024)
MIXPANEL_READ_RETRIES = env_int("MIXPANEL_READ_RETRIES", 2)
MIXPANEL_RETRY_AFTER_CAP = env_float("MIXPANEL_RETRY_AFTER_CAP", 5.0)

# How long a workspace's experiment list is reused before Mixpanel is asked again.
EXPERIMENT_LIST_CACHE_SECONDS = env_int("EXPERIMENT_LIST_CACHE_SECONDS", 60)
# Experiments each process keeps parsed and indexed, over all workspaces' lists; the least
# recently used list goes first (~1.4 KB each with the indexes: the default is ~70 MB per process).
EXPERIMENT_LIST_MEMORY_EXPERIMENTS = env_int("EXPERIMENT_LIST_MEMORY_EXPERIMENTS", 50_000, minimum=1)
# The task worker keeps lists fresh (services.list_refresh): a list someone read within
# EXPERIMENT_LIST_VIEWED_SECONDS is read again before its fresh copy expires; every other
# workspace with members every EXPERIMENT_LIST_BACKGROUND_SECONDS, so reminders about what
# is owed go out when nobody looks. Past its fresh period, a page shows the last copy and
# the worker reads it again: a person waits on Mixpanel only for a list never read before.
EXPERIMENT_LIST_VIEWED_SECONDS = env_int("EXPERIMENT_LIST_VIEWED_SECONDS", 3600, minimum=1)
EXPERIMENT_LIST_BACKGROUND_SECONDS = env_int("EXPERIMENT_LIST_BACKGROUND_SECONDS", 900, minimum=1)
# Decisions owed (selectors.owed): an active experiment is overdue OWED_OVERDUE_DAYS past its
# planned end, or after OWED_MAX_RUNNING_DAYS when no plan is known; a concluded one is
# undecided OWED_UNDECIDED_DAYS after its end; an active one with no exposures after
# OWED_NO_DATA_DAYS has no data.
OWED_OVERDUE_DAYS = env_int("OWED_OVERDUE_DAYS", 7)
OWED_MAX_RUNNING_DAYS = env_int("OWED_MAX_RUNNING_DAYS", 90, minimum=1)
OWED_UNDECIDED_DAYS = env_int("OWED_UNDECIDED_DAYS", 7)
OWED_NO_DATA_DAYS = env_int("OWED_NO_DATA_DAYS", 2)
# The weekly digest goes out on this ISO weekday (1 Monday ... 7 Sunday) from this hour (UTC).
OWED_DIGEST_WEEKDAY = env_int("OWED_DIGEST_WEEKDAY", 1, minimum=1)
OWED_DIGEST_HOUR = env_int("OWED_DIGEST_HOUR", 8)
if OWED_DIGEST_WEEKDAY > 7 or OWED_DIGEST_HOUR > 23:
    raise ImproperlyConfigured(
        "OWED_DIGEST_WEEKDAY must be 1 to 7 and OWED_DIGEST_HOUR 0 to 23; "
        f"got {OWED_DIGEST_WEEKDAY} and {OWED_DIGEST_HOUR}."
    )
# How long the experiment page reuses its read of one experiment (0: read it every time).
EXPERIMENT_DETAIL_CACHE_SECONDS = env_int("EXPERIMENT_DETAIL_CACHE_SECONDS", 15)

# --- Background tasks -------------------------------------------------------
# Django's Tasks framework with the database as the queue (django-tasks-db): the
# database every process already shares, so no broker to run. `manage.py db_worker`
# runs the tasks; `make run` and `make serve` start one beside the web server.
# Notifications have a queue of their own, run by a worker of their own
# (`db_worker --queue-name notifications`), so a slow webhook or mail server never holds up
# reconciles and approval expiries on the default queue.
TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": ["default", "notifications"]}}
# A reconcile task that cannot read Mixpanel tries again after 15 s, 30 s, 60 s, ...
# (doubling), at most this many times in all; then the cron safety net
# (reconcile_conclusions) is left to resolve the attempt.
RECONCILE_TASK_MAX_TRIES = env_int("RECONCILE_TASK_MAX_TRIES", 6, minimum=1)
RECONCILE_TASK_BACKOFF_SECONDS = env_float("RECONCILE_TASK_BACKOFF_SECONDS", 15.0, minimum=0.0)

# --- Notifications: a workspace's webhook and email -------------------------
# The dashboard's address as people reach it, for the links in messages
# ("https://desk.example.com"); without it a message carries the page's path only.
DESK_BASE_URL = env_str("DESK_BASE_URL").strip().rstrip("/")
if DESK_BASE_URL and not DESK_BASE_URL.startswith(("http://", "https://")):
    raise ImproperlyConfigured(f"DESK_BASE_URL must start with http:// or https://; got {DESK_BASE_URL!r}.")
# A message that could not be delivered is tried again after 30 s, 60 s, 120 s, ...
# (doubling), at most NOTIFY_MAX_TRIES times in all; then it is marked "gave up".
NOTIFY_MAX_TRIES = env_int("NOTIFY_MAX_TRIES", 5, minimum=1)
NOTIFY_BACKOFF_SECONDS = env_float("NOTIFY_BACKOFF_SECONDS", 30.0, minimum=0.0)
# Turning two-person approval off takes effect this many hours after an admin saves it; every
# admin and the webhook are told at once, and any admin may keep it on meanwhile.
APPROVAL_OFF_DELAY_HOURS = env_int("APPROVAL_OFF_DELAY_HOURS", 24, minimum=1)
# Seconds for one webhook post in all: looking its host up, connecting, TLS, sending and the
# answer's status line, however slowly a receiver answers.
NOTIFY_WEBHOOK_TIMEOUT = env_float("NOTIFY_WEBHOOK_TIMEOUT", 10.0, minimum=0.1)
# Webhooks go only to public internet addresses over https://. Networks listed here (a chat
# server inside the company, say 10.20.0.0/16) may be reached too, over http:// as well.
NOTIFY_WEBHOOK_ALLOW_NETWORKS = env_networks("NOTIFY_WEBHOOK_ALLOW_NETWORKS", what="only the networks webhooks need")

# The task worker's health: it beats every WORKER_HEARTBEAT_SECONDS; /readyz/worker answers
# 503 when no worker has beaten for WORKER_STALE_SECONDS, or when a task has been due for
# longer than WORKER_MAX_DELAY_SECONDS (the worker is alive but not keeping up).
WORKER_HEARTBEAT_SECONDS = env_float("WORKER_HEARTBEAT_SECONDS", 10.0, minimum=0.1)
WORKER_STALE_SECONDS = env_float("WORKER_STALE_SECONDS", 60.0, minimum=1.0)
WORKER_MAX_DELAY_SECONDS = env_float("WORKER_MAX_DELAY_SECONDS", 300.0, minimum=1.0)
# A task running this long is stuck, not slow (every task's own deadlines are far shorter):
# the workers' sweep puts it back on the queue, as it does one whose worker stopped beating.
WORKER_TASK_LIMIT_SECONDS = env_float("WORKER_TASK_LIMIT_SECONDS", 600.0, minimum=60.0)


# The audit trail's stream to a SIEM collector (Splunk HEC style), pushed by the worker.
AUDIT_STREAM_URL = env_str("AUDIT_STREAM_URL").strip()
AUDIT_STREAM_TOKEN = env_secret("AUDIT_STREAM_TOKEN")

# The API: requests one token may make in a minute (then 429 with Retry-After).
API_RATE_LIMIT_PER_MINUTE = env_int("API_RATE_LIMIT_PER_MINUTE", 120, minimum=1)

# /metrics: open to these networks (the scraper's), or to a request bearing METRICS_TOKEN.
METRICS_ALLOWED_NETWORKS = env_networks(
    "METRICS_ALLOWED_NETWORKS", ["127.0.0.0/8", "::1/128"], what="the scrapers' addresses"
)
METRICS_TOKEN = env_secret("METRICS_TOKEN")
# Email goes through Django's default mailer: printed to the console in development
# unless EMAIL_HOST names a mail server, SMTP otherwise. Tests use Django's in-memory
# outbox whatever is set here.
_email_host = env_str("EMAIL_HOST")
if _email_host or not DEBUG:
    _email_tls, _email_ssl = env_bool("EMAIL_USE_TLS", False), env_bool("EMAIL_USE_SSL", False)
    if _email_tls and _email_ssl:
        raise ImproperlyConfigured("Set EMAIL_USE_TLS (STARTTLS) or EMAIL_USE_SSL, not both.")
    MAILERS = {
        "default": {
            "BACKEND": "django.core.mail.backends.smtp.EmailBackend",
            "OPTIONS": {
                "host": _email_host or "localhost",
                "port": env_int("EMAIL_PORT", 25, minimum=1),
                "username": env_str("EMAIL_HOST_USER"),
                "password": env_secret("EMAIL_HOST_PASSWORD"),
                "use_tls": _email_tls,
                "use_ssl": _email_ssl,
                "timeout": env_float("EMAIL_TIMEOUT", 10.0, minimum=0.1),
            },
        }
    }
else:
    MAILERS = {"default": {"BACKEND": "django.core.mail.backends.console.EmailBackend"}}
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL") or "Experiment Desk <experiment-desk@localhost>"

# --- Logging, request ids, error pages --------------------------------------
# Production writes one JSON object per line (python-json-logger: a formatter for the
# standard logging that Django, gunicorn and the task worker already use). Every line
# carries the request id, user, workspace, attempt id and path where known (see
# experiments.observability); the request line adds method, status and duration_ms.
LOG_JSON = env_bool("DJANGO_LOG_JSON", not DEBUG)
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"context": {"()": "experiments.observability.RequestContextFilter"}},
    "formatters": {
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": ["levelname", "name", "message", "request_id", "user", "workspace", "attempt_id", "path"],
            "rename_fields": {"levelname": "level", "name": "logger"},
            "timestamp": "time",
            # django.request attaches the request object itself; its repr is not for logs.
            "reserved_attrs": [*RESERVED_ATTRS, "request"],
        },
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "filters": ["context"],
            "formatter": "json" if LOG_JSON else "plain",
        }
    },
    "root": {"handlers": ["console"], "level": env_str("DJANGO_LOG_LEVEL", "INFO")},
    "loggers": {
        # Django's own console handler (debug only) would print each of its lines a
        # second time beside ours; they reach the root handler above anyway.
        "django": {"handlers": [], "level": "INFO"},
        "django.db.backends": {"level": "WARNING"},
    },
}
# Sensitive variables and POST parameters (a typed webhook address) are hidden on the debug
# page too, and wherever else in a traceback they turn up.
DEFAULT_EXCEPTION_REPORTER_FILTER = "experiments.observability.SecretsHiddenReporterFilter"
# A failed CSRF check gets our own page (plain words, the request id) instead of Django's.
CSRF_FAILURE_VIEW = "experiments.views.errors.csrf_failure"
# Probes from a load balancer usually come over plain HTTP: answer them, do not redirect.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^readyz/worker$", r"^metrics$"]

# --- Sign-in: password, OpenID Connect, trusted proxy header, sessions ------------
# Everything about who may sign in and how lives in this block.
PASSWORD_LOGIN = env_bool("DJANGO_PASSWORD_LOGIN", True)
LOGIN_URL = "login" if PASSWORD_LOGIN else "signin"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = LOGIN_URL
# Whom someone signed in without any role should ask for access, shown on their home page:
# an e-mail address, a web address or a sentence. No workspace's admins are listed there.
DESK_ACCESS_CONTACT = env_str("DESK_ACCESS_CONTACT").strip()

# OpenID Connect: endpoints come from the issuer's discovery document at run time.
# The client secret is read by experiments.signin.oidc when needed, never kept here.
OIDC_ISSUER_URL = env_str("OIDC_ISSUER_URL").rstrip("/")
OIDC_CLIENT_ID = env_str("OIDC_CLIENT_ID")
OIDC_SCOPES = " ".join((env_str("OIDC_SCOPES") or "openid email profile").replace(",", " ").split())
OIDC_GROUPS_CLAIM = env_str("OIDC_GROUPS_CLAIM", "groups") or "groups"
OIDC_AUDITOR_GROUPS = env_list("OIDC_AUDITOR_GROUPS", [])
if bool(OIDC_ISSUER_URL) != bool(OIDC_CLIENT_ID):
    raise ImproperlyConfigured("Set both OIDC_ISSUER_URL and OIDC_CLIENT_ID for single sign-on, or neither.")
if "openid" not in OIDC_SCOPES.split():
    raise ImproperlyConfigured(f"OIDC_SCOPES must include openid; got {OIDC_SCOPES!r}.")
# Timeout of each call to the identity provider (discovery, keys, token), seconds.
OIDC_TIMEOUT = env_float("OIDC_TIMEOUT", 10.0, minimum=0.1)
# An SSO session is re-checked with the provider (its refresh token) when its ID token
# expires, or this long after the last check if sooner; removed groups lose their roles then.
OIDC_RECHECK_SECONDS = env_int("OIDC_RECHECK_SECONDS", 3600, minimum=60)
# Names mozilla-django-oidc reads for itself.
OIDC_RP_CLIENT_ID = OIDC_CLIENT_ID
OIDC_RP_SCOPES = OIDC_SCOPES
OIDC_RP_SIGN_ALGO = "RS256"
OIDC_USE_PKCE = True

# Sign-in through an authenticating proxy (oauth2-proxy, an identity-aware proxy): off
# unless a header is named; only honoured from the listed proxy addresses.
TRUSTED_USER_HEADER = env_str("DJANGO_TRUSTED_USER_HEADER")
TRUSTED_GROUPS_HEADER = env_str("DJANGO_TRUSTED_GROUPS_HEADER")
TRUSTED_PROXIES = env_networks("DJANGO_TRUSTED_PROXIES")
# Where the trusted proxies put the client's address; each appends the address it received
# the request from (experiments.signin.addresses). Empty: the peer's address only.
CLIENT_ADDRESS_HEADER = env_str("DJANGO_CLIENT_ADDRESS_HEADER", "X-Forwarded-For").strip()
if TRUSTED_USER_HEADER and not TRUSTED_PROXIES:
    raise ImproperlyConfigured("DJANGO_TRUSTED_USER_HEADER needs DJANGO_TRUSTED_PROXIES (the proxy addresses).")

AUTHENTICATION_BACKENDS = [
    # First: refuses a locked-out username or address before any password is checked.
    "experiments.signin.backends.ThrottleBackend",
    "django.contrib.auth.backends.ModelBackend",
    "experiments.signin.backends.OIDCBackend",
    "experiments.signin.backends.TrustedHeaderBackend",
]

# Password throttle (django-axes), within AXES_COOLOFF_TIME (the window restarts with each
# failed password): 5 failures for one username from one address lock that username out from
# that address, 10 for one username from anywhere lock it out everywhere. 20 from one address
# lock nobody out: attempts from there must pass the sign-in check (a proof of work of
# DJANGO_LOGIN_CHALLENGE_BITS, experiments.signin.challenge), since behind a NAT or proxy
# that address is everyone's. An attempt refused unchecked is not counted (a locked pair
# cannot push its username to the everywhere limit).
AXES_HANDLER = "experiments.signin.backends.ThrottleHandler"
AXES_USERNAME_CALLABLE = "experiments.signin.backends.throttle_username"
AXES_CLIENT_IP_CALLABLE = "experiments.signin.addresses.client_address"
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_FAILURE_LIMIT = env_int("DJANGO_LOGIN_USERNAME_ADDRESS_LIMIT", 5, minimum=1)
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
LOGIN_USERNAME_LIMIT = env_int("DJANGO_LOGIN_USERNAME_LIMIT", 10, minimum=1)
LOGIN_ADDRESS_LIMIT = env_int("DJANGO_LOGIN_ADDRESS_LIMIT", 20, minimum=1)
LOGIN_CHALLENGE_BITS = env_int("DJANGO_LOGIN_CHALLENGE_BITS", 20)
if LOGIN_CHALLENGE_BITS > 28:
    raise ImproperlyConfigured(f"DJANGO_LOGIN_CHALLENGE_BITS must be at most 28; got {LOGIN_CHALLENGE_BITS}.")
AXES_COOLOFF_TIME = env_float("DJANGO_LOGIN_COOLOFF_MINUTES", 15.0, minimum=0.1) / 60  # hours
AXES_LOCKOUT_CALLABLE = "experiments.signin.views.locked_out"
AXES_RESET_ON_SUCCESS = False
AXES_ENABLE_ADMIN = True
AXES_VERBOSE = False

# Sessions end after SESSION_IDLE_TIMEOUT without a request, and SESSION_ABSOLUTE_TIMEOUT
# after sign-in whatever happens; the cookie never outlives the absolute limit.
SESSION_IDLE_TIMEOUT = env_int("DJANGO_SESSION_IDLE_TIMEOUT", 8 * 3600, minimum=60)
SESSION_ABSOLUTE_TIMEOUT = env_int("DJANGO_SESSION_ABSOLUTE_TIMEOUT", 7 * 24 * 3600, minimum=60)
SESSION_COOKIE_AGE = SESSION_ABSOLUTE_TIMEOUT
# django-axes logs every attempt at INFO; its warnings (lockouts) are what operators need.
LOGGING["loggers"]["axes"] = {"level": "WARNING"}

# Error reports: with SENTRY_DSN set (it holds a key: NAME or NAME_FILE), unhandled errors
# and ERROR log lines of the app servers and the worker go to Sentry, scrubbed of secrets.
SENTRY_DSN = env_secret("SENTRY_DSN")
if SENTRY_DSN:
    init_error_reports(dsn=SENTRY_DSN, environment=env_str("SENTRY_ENVIRONMENT"))
