"""/api/v1/: the API's routes. A token, not a session, signs a request in, so no route needs
the session sign-in; every POST honours an Idempotency-Key."""

from __future__ import annotations

from typing import Any

from experiments.api.endpoints import api
from experiments.api.idempotency import idempotent


def _routes() -> tuple[list[Any], str, str]:
    patterns, app_name, namespace = api.urls
    for pattern in patterns:
        pattern.callback.login_required = False  # what login_not_required sets
        pattern.callback = idempotent(pattern.callback)
    return patterns, app_name, namespace


urls = _routes()
