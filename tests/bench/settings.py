"""Settings for benchmark runs: the real settings plus a hello-world page to compare against.

DATABASE_URL, REDIS_URL and MIXPANEL_API_BASE_URL are set by the harness (tests/bench/run.py)
to a throwaway database and a stand-in before Django starts, so nothing here can reach a
developer's own database.
"""

from __future__ import annotations

import os
import warnings

from dashboard.settings import *  # noqa: F403
from dashboard.settings import env_str

# The same middleware, login and templates as the real pages; only one extra route.
ROOT_URLCONF = "tests.bench.urls"
DEBUG = False
ALLOWED_HOSTS = ["testserver", "127.0.0.1", "localhost"]

# Static files are served from the app directories (no collectstatic in a throwaway run).
warnings.filterwarnings("ignore", message="No directory at", category=UserWarning)

# Per-call INFO lines from the Mixpanel client would cost more than some of the pages measured.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("BENCH_LOG_LEVEL", "WARNING")},
}

# A shared cache for the gunicorn benchmarks: a key prefix of this run only, so the harness can
# delete exactly its own keys and never another user's data in the same Redis database.
if REDIS_URL:  # noqa: F405
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,  # noqa: F405
            "KEY_PREFIX": os.environ.get("BENCH_CACHE_PREFIX", "desk-bench"),
        }
    }
