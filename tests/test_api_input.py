"""No API request answers 500, whatever it carries: every endpoint, every kind of token,
hostile paths, queries, bodies and headers. A bad request gets a readable problem (4xx)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from experiments.models import ApiToken, TokenScope
from experiments.services import tokens as token_services
from tests.routes import ROUTES, route_path, route_values
from tests.test_reliability_input import INT_PATH_VALUES, PARAM_VALUES, TEXT_PATH_VALUES

API_ROUTES = [route for route in ROUTES if route.name.startswith("api-v1:")]
QUERY_PARAMS = ["status", "q", "sort", "cursor", "after", "limit"]
# Bodies: every field of every endpoint, with wrong types, sizes and shapes.
BODY_FIELDS = ["reason", "reason_category", "end_date", "variant", "success", "note"]
BODY_VALUES: list[Any] = [
    None,
    True,
    0,
    -1,
    2**64,
    1e309,
    "",
    "x" * 100_000,
    "a\x00b",
    "9999-12-31T23:59:59.999999+14:00",
    "0001-01-01T00:00:00-14:00",
    [],
    {"$ref": "#/"},
    [[[[[[[[[[[]]]]]]]]]]],
]
RAW_BODIES = [b"", b"{", b"null", b"[]", b"\xff\xfe", b'{"reason": "x"' + b" " * 10, b"reason=x&note=y"]
HEADER_CASES = [
    {"HTTP_IDEMPOTENCY_KEY": ""},
    {"HTTP_IDEMPOTENCY_KEY": "k" * 5000},
    {"HTTP_IDEMPOTENCY_KEY": "tab\tkey"},
    {"HTTP_AUTHORIZATION": "Bearer"},
    {"HTTP_AUTHORIZATION": "Bearer " + "x" * 10_000},
    {"HTTP_AUTHORIZATION": "Basic dXNlcjpwYXNz"},
]


@pytest.fixture
def callers(standin, workspace, pm, teammate, ws_admin, auditor, outsider, django_user_model) -> dict[str, str]:
    root = django_user_model.objects.create_superuser("root", password="pw-root")
    tokens = {
        name: token_services.api_token_create(user=user, name=f"fuzz {name}", scope=scope).secret
        for name, user, scope in [
            ("viewer", teammate, TokenScope.ACT),
            ("concluder", pm, TokenScope.ACT),
            ("concluder-read", pm, TokenScope.READ),
            ("admin", ws_admin, TokenScope.ACT),
            ("auditor", auditor, TokenScope.READ),
            ("outsider", outsider, TokenScope.ACT),
            ("superuser", root, TokenScope.ACT),
            ("expired", pm, TokenScope.ACT),
        ]
    }
    ApiToken.objects.filter(name="fuzz expired").update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    return {"anonymous": "", **tokens}


@pytest.mark.django_db
def test_no_api_request_answers_500(callers, standin, workspace, pm, settings):
    settings.API_RATE_LIMIT_PER_MINUTE = 1_000_000
    valid = route_values(standin=standin, workspace=workspace, owner=pm)
    client = Client(raise_request_exception=False)
    failures: list[str] = []
    sent = 0

    def send(method: str, path: str, secret: str, body: bytes | None = None, **extra: Any) -> None:
        nonlocal sent
        sent += 1
        headers = {"HTTP_AUTHORIZATION": f"Bearer {secret}"} if secret else {}
        headers.update(extra)
        try:
            if method == "GET":
                response = client.get(path, **headers)
            else:
                response = client.post(path, body or b"{}", content_type="application/json", **headers)
        except Exception as exc:
            failures.append(f"{method} {path[:120]!r}: raised {type(exc).__name__}: {exc}"[:300])
            return
        if response.status_code >= 500 and response.status_code not in (502, 504):
            failures.append(f"{method} {path[:120]!r} {body!r:.100}: {response.status_code}")
        elif response.status_code >= 400 and response["Content-Type"] != "application/problem+json":
            failures.append(f"{method} {path[:120]!r}: {response.status_code} is not a problem")

    for secret in callers.values():
        for route in API_ROUTES:
            for method, path, body, headers in _requests(route, valid):
                send(method, path, secret, body, **headers)
    assert sent > 2000
    assert failures == [], f"{len(failures)} of {sent} requests failed:\n" + "\n".join(failures[:40])


@pytest.mark.django_db
@pytest.mark.parametrize("field", ["reason", "reason_category"])
def test_a_null_character_in_typed_text_is_refused_and_nothing_is_recorded(callers, standin, workspace, pm, field):
    # PostgreSQL cannot keep NUL in text; SQLite would. Both refuse it before anything is written.
    from experiments.models import AuditEntry, ConclusionAttempt

    valid = route_values(standin=standin, workspace=workspace, owner=pm)
    path = f"/api/v1/workspaces/{workspace.pk}/experiments/{valid['experiment_id']()}/force-conclude"
    body = {"reason": "fuzz", "reason_category": "other", field: "a\x00b"}
    attempts, entries = ConclusionAttempt.objects.count(), AuditEntry.objects.count()
    response = Client().post(
        path, json.dumps(body), content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {callers['concluder']}"
    )
    assert response.status_code == 400
    assert response.json()["errors"][field] == ["Value error, Null characters are not allowed."]
    assert (ConclusionAttempt.objects.count(), AuditEntry.objects.count()) == (attempts, entries)


def _hostile_path_values(route: Any, name: str) -> list[str]:
    numeric = name in route.int_params or (name.endswith("_id") and name != "experiment_id")
    return INT_PATH_VALUES if numeric else TEXT_PATH_VALUES


def _requests(route: Any, valid: dict) -> Any:
    """(method, path, body, headers) of every hostile request to one API route."""
    good = route_path(route, {name: valid[name]() for name in route.params})
    reads = route.name.endswith(("-list", "-get", "entries", "openapi-json"))
    method = "GET" if reads else "POST"
    for name in route.params:
        for value in _hostile_path_values(route, name):
            yield method, route_path(route, {**{k: valid[k]() for k in route.params}, name: value}), None, {}
    if reads:
        for param in QUERY_PARAMS:
            for value in PARAM_VALUES[::2]:
                query = "&".join(f"{param}={v}" for v in (value if isinstance(value, list) else [value]))
                yield method, f"{good}?{query}", None, {}
    else:
        for field in BODY_FIELDS:
            for value in BODY_VALUES:
                yield method, good, json.dumps({"reason": "fuzz", "note": "fuzz", field: value}).encode(), {}
        for raw in RAW_BODIES:
            yield method, good, raw, {}
    for headers in HEADER_CASES:
        yield method, good, None, headers
