"""Idempotency-Key on the API's POSTs: a repeat of a request with the same key (per token,
within 24 hours) gets the first answer back, and nothing is done again.

A key used for a different request is refused (422); a repeat that arrives while the first
is still being answered is told so (409). An answer that did nothing (the token was refused
or over its rate) is not kept, so the same key can be tried again.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse

from experiments.api.problems import problem
from experiments.services import idempotency as idempotency_services
from experiments.services import tokens as token_services

HEADER = "Idempotency-Key"
KEPT_HEADERS = ("Content-Type", "Location")
# Answers that did nothing: the request may be sent again with the same key.
NOT_KEPT = frozenset({401, 429})
MSG_BAD_KEY = f"An {HEADER} is 1 to {idempotency_services.KEY_MAX_LENGTH} printable characters."
MSG_OTHER_REQUEST = f"This {HEADER} was used for another request; use a new key for a new request."
MSG_IN_PROGRESS = f"A request with this {HEADER} is still being answered; ask again in a moment."


def _token(request: HttpRequest) -> Any:
    scheme, _, secret = request.headers.get("Authorization", "").partition(" ")
    return token_services.api_token_authenticate(secret.strip()) if scheme.lower() == "bearer" else None


def idempotent(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Answer a POST with an Idempotency-Key once; repeats get that answer back."""

    @functools.wraps(view)
    def once(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        key = request.headers.get(HEADER)
        if request.method != "POST" or key is None:
            return view(request, *args, **kwargs)
        if not 0 < len(key) <= idempotency_services.KEY_MAX_LENGTH or not key.isprintable():
            return problem(400, MSG_BAD_KEY, errors={HEADER: [MSG_BAD_KEY]})
        token = _token(request)
        if token is None:
            return view(request, *args, **kwargs)  # refused as any request without a valid token
        fingerprint = idempotency_services.request_fingerprint(method="POST", path=request.path, body=request.body)
        claim = idempotency_services.idempotency_claim(token=token, key=key, fingerprint=fingerprint)
        if not claim.first:
            if not claim.same_request:
                return problem(422, MSG_OTHER_REQUEST)
            if claim.record.status is None:
                return problem(409, MSG_IN_PROGRESS)
            return _replayed(claim.record)
        try:
            response = view(request, *args, **kwargs)
        except BaseException:
            idempotency_services.idempotency_abandon(record=claim.record)
            raise
        if response.status_code in NOT_KEPT:
            idempotency_services.idempotency_abandon(record=claim.record)
            return response
        headers = {name: response[name] for name in KEPT_HEADERS if response.has_header(name)}
        body = json.loads(response.content) if response.content else None
        idempotency_services.idempotency_answered(
            record=claim.record, status=response.status_code, body=body, headers=headers
        )
        return response

    return once


def _replayed(record: Any) -> HttpResponse:
    response = HttpResponse(
        json.dumps(record.body) if record.body is not None else b"",
        status=record.status,
        content_type=record.headers.get("Content-Type", "application/json"),
    )
    for name, value in record.headers.items():
        if name != "Content-Type":
            response[name] = value
    response["Idempotent-Replayed"] = "true"
    return response
