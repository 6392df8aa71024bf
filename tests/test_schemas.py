"""The stand-in and the client against our schemas of Mixpanel's published contract.

tests/schemas/mixpanel_experiments.schema.json is written from the published
description. Every answer of the stand-in (its default data, every route, its errors
and faults) and every request the client sends must be valid against it; the
"[tolerance]" rows break it on purpose and are a separate set the client must survive.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
import requests
from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import ValidationError

from experiments.mixpanel import client as mixpanel
from experiments.standin import DEMO_WORKSPACES
from experiments.standin.data import TOLERANCE_PREFIX, build_workspace

SCHEMA = json.loads((Path(__file__).parent / "schemas" / "mixpanel_experiments.schema.json").read_text())
GROWTH = 1001
AUTH = ("desk-test.sa", "CANARY-s3cr3t-do-not-leak")
END = dt.datetime(2026, 11, 26, 9, 30, tzinfo=dt.UTC)
FORMATS = FormatChecker()


@FORMATS.checks("date-time", raises=ValueError)
def _is_date_time(value: object) -> bool:
    # The published dates are ISO 8601 date-times; Python's parser reads every form they take.
    if isinstance(value, str):
        dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return True


def problems(definition: str, instance: Any) -> list[str]:
    """Every way `instance` breaks #/$defs/<definition> (empty when it is valid)."""
    validator = Draft202012Validator({**SCHEMA, "$ref": f"#/$defs/{definition}"}, format_checker=FORMATS)
    return [f"{'/'.join(map(str, error.absolute_path))}: {error.message}" for error in validator.iter_errors(instance)]


def answer_definition(method: str, path: str) -> str:
    """Which answer schema a route has: the list answers a list, every other route one experiment."""
    parts = path.split("/api/app/", 1)[-1].strip("/").split("/")
    return "listAnswer" if method == "GET" and len(parts) == 3 else "oneAnswer"


def request_definition(method: str, path: str) -> str:
    parts = path.split("/api/app/", 1)[-1].strip("/").split("/")
    action = parts[4] if len(parts) > 4 else None
    if action == "force_conclude":
        return "forceConcludeRequest"
    if action == "decide":
        return "decideRequest"
    if len(parts) == 3 and method == "POST":
        return "createRequest"
    if len(parts) == 4 and method == "PATCH":
        return "updateRequest"
    return "noBody"


def call(standin: Any, method: str, path: str, body: Any = None, auth: Any = AUTH) -> requests.Response:
    """One request to the stand-in whose JSON answer is checked against its route's schema."""
    response = requests.request(method, standin.url + path, json=body, auth=auth, timeout=5)
    assert problems(answer_definition(method, path), response.json()) == [], (method, path, response.text[:300])
    return response


# --- The stand-in's data and answers --------------------------------------------------------


@pytest.mark.parametrize("size", [48, 300])
def test_default_data_of_every_demo_workspace_is_valid(size):
    today = dt.datetime(2026, 11, 26, 9, 0, tzinfo=dt.UTC)
    for ws in DEMO_WORKSPACES:
        rows, _ = build_workspace(ws, seed=1, count=size, today=today)
        for row in rows:
            assert problems("experiment", row) == [], row["name"]


def test_every_route_answers_valid_json_through_the_whole_lifecycle(standin):
    base = f"/workspaces/{GROWTH}/experiments"
    call(standin, "GET", base)
    call(standin, "GET", base + "/")  # Mixpanel's own client asks with a trailing slash
    created = call(standin, "POST", base, {"name": "Schema tour", "tags": ["t"], "variants": [{"key": "a"}]})
    exp = created.json()["results"]
    assert exp["status"] == "draft"
    item = f"{base}/{exp['id']}"
    call(standin, "GET", item)
    assert call(standin, "PATCH", item, {"hypothesis": "It helps"}).json()["results"]["hypothesis"] == "It helps"
    call(standin, "POST", item + "/archive")
    call(standin, "DELETE", item + "/archive")
    assert call(standin, "PUT", item + "/launch").json()["results"]["status"] == "active"
    assert call(standin, "PUT", item + "/force_conclude", {}).json()["results"]["status"] == "concluded"
    decision = {"success": False, "variant": "a", "message": "No lift"}
    assert call(standin, "PATCH", item + "/decide", decision).json()["results"]["status"] == "fail"
    assert call(standin, "DELETE", item).json()["results"]["deleted"] is not None
    call(standin, "GET", base)


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("PUT", "/launch", None, 400),  # an active experiment cannot be launched
        ("PATCH", "/decide", {"success": True}, 400),  # nor decided before it is concluded
        ("PUT", "/force_conclude", {"end_date": "soon"}, 400),
        ("PATCH", "", {"status": "success"}, 400),  # status is no writable field
        ("PATCH", "", ["not", "an", "object"], 400),
        ("DELETE", "/launch", None, 405),
        ("GET", "/nothing", None, 404),
    ],
)
def test_refusals_carry_the_error_shape_with_its_type(standin, method, path, body, status):
    active = standin.find(GROWTH, status="active")
    response = call(standin, method, f"/workspaces/{GROWTH}/experiments/{active['id']}{path}", body)
    assert response.status_code == status
    assert response.json()["type"]


def test_auth_access_and_unknown_ids_carry_the_error_shape(standin):
    base = f"/workspaces/{GROWTH}/experiments"
    assert call(standin, "GET", base, auth=("desk-test.sa", "wrong")).status_code == 401
    assert call(standin, "GET", base + "/no-such-id").status_code == 404
    standin.set_access(GROWTH, allowed=False)
    assert call(standin, "GET", base).status_code == 403


@pytest.mark.parametrize(
    "kind", ["rate_limit", "status_error", "unauthorized", "forbidden", "not_found", "noop_200", "latency"]
)
@pytest.mark.parametrize(("method", "suffix"), [("GET", ""), ("PUT", "/force_conclude"), ("PATCH", "")])
def test_faults_that_answer_json_answer_valid_json_on_every_route(standin, kind, method, suffix):
    active = standin.find(GROWTH, status="active")
    standin.set_fault(kind, experiment_id=active["id"], latency_ms=1)
    body = {"hypothesis": "x"} if method == "PATCH" else ({} if method == "PUT" else None)
    call(standin, method, f"/workspaces/{GROWTH}/experiments/{active['id']}{suffix}", body)


# --- What the client sends -------------------------------------------------------------------


def test_every_request_the_client_sends_is_valid(standin):
    client = mixpanel.client_for(type("Ws", (), {"region": "us"})())
    active = standin.find(GROWTH, status="active")
    client.list_experiments(GROWTH)
    client.get_experiment(GROWTH, active["id"])
    client.force_conclude(GROWTH, active["id"], end_date=END)
    sent = standin.requests()
    assert {r.method for r in sent} == {"GET", "PUT"}
    for record in sent:
        body = json.loads(record.body) if record.body else {}
        assert problems(request_definition(record.method, record.path), body) == [], record


# --- The test of the test: drift is caught ------------------------------------------------------


def test_a_drifted_answer_is_rejected(standin):
    exp = standin.find(GROWTH, status="active")
    assert problems("okOne", {"status": "ok", "results": exp}) == []
    drifts = {
        "an undeclared field": {**exp, "future_field": 1},
        "null where the contract promises a date": {**exp, "created": None},
        "a non-nullable id as text": {**exp, "last_modified_by_id": "900"},
        "an unknown status": {**exp, "status": "paused"},
        "a date that is no date": {**exp, "start_date": "last Tuesday"},
        "a variant that is no object": {**exp, "variants": ["control"]},
    }
    for what, drifted in drifts.items():
        assert problems("okOne", {"status": "ok", "results": drifted}) != [], what
    assert problems("oneAnswer", {"status": "error", "error": "no type"}) != []
    assert problems("listAnswer", {"status": "ok", "results": {"id": "not a list"}}) != []


def test_a_drifted_request_is_rejected():
    assert problems("forceConcludeRequest", {"end_date": "2026-11-26T09:30:00Z"}) == []
    assert problems("forceConcludeRequest", {"end_date": "2026-11-26T09:30:00Z", "reason": "x"}) != []
    assert problems("decideRequest", {"success": "yes", "variant": "a"}) != []
    assert problems("noBody", {"anything": 1}) != []


def test_the_check_itself_fails_on_a_drifted_stand_in(standin):
    """`call` is what every stand-in answer above goes through: it must not pass a drifted one."""
    exp = standin.add_experiment(GROWTH, name="Drifted", status="active", future_field=True)
    with pytest.raises(AssertionError):
        call(standin, "GET", f"/workspaces/{GROWTH}/experiments/{exp['id']}")
    with pytest.raises(ValidationError):
        Draft202012Validator({**SCHEMA, "$ref": "#/$defs/experiment"}).validate({**exp, "created": None})


# --- The tolerance set: schema-breaking on purpose, and the client copes ------------------------


def test_tolerance_rows_break_the_schema_and_the_client_still_reads_them(standin):
    rows = standin.add_tolerance_rows(GROWTH)
    assert rows
    assert all(row["name"].startswith(TOLERANCE_PREFIX) for row in rows)
    for row in rows:
        assert problems("experiment", row) != [], row["name"]
    client = mixpanel.client_for(type("Ws", (), {"region": "us"})())
    listed = {e.id for e in client.list_experiments(GROWTH)}
    for row in rows:
        assert row["id"] in listed
        assert client.get_experiment(GROWTH, row["id"]).id == row["id"]
