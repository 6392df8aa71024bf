"""Answers as plain HTTP codes, errors as RFC 9457 problem details.

A press's outcome becomes a code by one table: 200 done; 202 waiting (for approval, or for
Mixpanel's answer); 409 when another attempt holds the experiment or it is in no state the
action applies to; 502 and 504 when Mixpanel fails or does not answer; 400, 403 and 404 as
the pages decide.
"""

from __future__ import annotations

import json
from typing import Any

from django.http import HttpResponse
from django.urls import reverse

from experiments.models import AttemptState, ConclusionAttempt
from experiments.services.attempts import (
    FAILURE_CONFLICT,
    FAILURE_FORBIDDEN,
    FAILURE_INVALID,
    FAILURE_NOT_FOUND,
    FAILURE_TIMEOUT,
    FAILURE_UPSTREAM,
    STATE_BLOCKED,
    AttemptOutcome,
)

PROBLEM_TYPE = "application/problem+json"
TITLES = {
    400: "The request is not valid",
    401: "A valid API token is needed",
    403: "Not allowed",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    422: "The Idempotency-Key was used for another request",
    429: "Too many requests",
    502: "Mixpanel failed",
    504: "Mixpanel did not answer in time",
}
FAILURE_STATUSES = {
    FAILURE_FORBIDDEN: 403,
    FAILURE_INVALID: 400,
    FAILURE_NOT_FOUND: 404,
    FAILURE_CONFLICT: 409,
    FAILURE_UPSTREAM: 502,
    FAILURE_TIMEOUT: 504,
}


def problem(status: int, detail: str = "", *, title: str = "", **extra: Any) -> HttpResponse:
    """A problem details answer; `extra` adds members (None values are left out)."""
    body = {"type": "about:blank", "title": title or TITLES.get(status, "Error"), "status": status, "detail": detail}
    body.update({key: value for key, value in extra.items() if value is not None})
    return HttpResponse(json.dumps(body), status=status, content_type=PROBLEM_TYPE)


def attempt_url(attempt: ConclusionAttempt) -> str:
    return reverse("api-v1:attempt-get", args=[attempt.pk])


def outcome_status(outcome: AttemptOutcome) -> int:
    """The HTTP code a press's (or a review's) outcome answers with: 200 when it did what was
    asked (concluded, decided, rejected, withdrawn), 202 while it waits on a person or on
    Mixpanel, else the code of why it failed."""
    if outcome.ok:
        return 200
    if outcome.state == STATE_BLOCKED:
        return 409
    if outcome.failure:
        return FAILURE_STATUSES[outcome.failure]
    if outcome.attempt is not None and outcome.attempt.is_waiting:
        return 202
    return 409 if outcome.state == AttemptState.FAILED else 200
