"""gunicorn's settings for production (bin/serve, `make serve`): threaded workers.

A force conclude waits on Mixpanel (up to MIXPANEL_DEADLINE) and an audit export
streams for many seconds, so each worker process serves several requests at once on
threads, and the timeout is well above both. Counts come from the environment.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import multiprocess


def _count(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise SystemExit(f"{name} must be a whole number of at least 1; got {raw!r}.")
    return int(raw)


wsgi_app = "dashboard.wsgi"
worker_class = "gthread"
workers = _count("WEB_CONCURRENCY", 2)
threads = _count("GUNICORN_THREADS", 4)
timeout = _count("GUNICORN_TIMEOUT", 120)
graceful_timeout = 30
# gunicorn's control socket has one default path per user, so two servers on one host
# (or a test running two) would take it from each other; signals are all we use.
control_socket_disable = True
# Only the proxy in front may say which scheme and client a request came with.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")

# gunicorn's own lines (start, worker boot, timeouts) as JSON too, unless turned off like
# Django's. No access log: Django writes one line per request, with its request id.
_json = os.environ.get("DJANGO_LOG_JSON", "1").strip().lower() not in {"0", "false", "no", "off"}
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "generic": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": ["levelname", "name", "message", "process"],
            "rename_fields": {"levelname": "level", "name": "logger"},
            "timestamp": "time",
        }
        if _json
        else {"format": "%(asctime)s [%(process)d] [%(levelname)s] %(message)s"}
    },
    "handlers": {
        "error_console": {"class": "logging.StreamHandler", "formatter": "generic", "stream": "ext://sys.stderr"}
    },
    "root": {"level": "INFO", "handlers": ["error_console"]},
    "loggers": {
        "gunicorn.error": {"level": "INFO", "handlers": ["error_console"], "propagate": False},
        "gunicorn.access": {"level": "CRITICAL", "handlers": [], "propagate": False},
    },
}


def child_exit(server: object, worker: Any) -> None:
    """A worker process ended: its live gauges leave /metrics; its counters stay counted."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(worker.pid)
