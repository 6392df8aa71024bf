"""No request answers 500, whatever it carries: every URL, every parameter, every role.

The routes come from the project's URLconf, so a new one is fuzzed without anyone
listing it here. The parameters each view reads are listed in PARAMS, and
`test_every_parameter_a_view_reads_is_fuzzed` fails when a view starts reading one
that list does not know. Each route is asked with hostile path values (ints at and
past 2**63, NUL bytes, very long or non-ASCII text), then each of its parameters with
hostile values (the same, plus dates at year 1 and 9999 with offsets and digits
like "²"), as a GET and as a POST, plain and as htmx, by every persona. A bad value
must get a readable 4xx (or the page with its error), never a 500 or an exception;
streamed exports are read to the end, so a failure after the first byte counts too.

It runs on whichever database the suite runs on (SQLite, and PostgreSQL in CI), which
refuse different things (PostgreSQL: NUL in text; both: integers past 64 bits).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.http import HttpResponse
from django.test import Client
from django.urls import resolve

from experiments.forms import ApiTokenForm, ForceConcludeForm, WorkspaceSettingsForm
from experiments.models import ReasonCategory
from experiments.queries import ExperimentListQuery, HomeQuery
from experiments.views.audit import AuditFilterForm
from tests.routes import ROUTES, Route, route_path, route_values

ROOT = Path(__file__).resolve().parent.parent

# Path segments for an <int:...> route parameter: the converter admits any digits, the
# database only 64-bit integers.
INT_PATH_VALUES = ["0", "9223372036854775807", "9223372036854775808", "9" * 40, "0" * 25 + "1"]
# Path segments for a text parameter (an experiment id, an export format, an admin object id).
TEXT_PATH_VALUES = [
    "exp\x00id",
    "\x1b[31m",
    "x" * 3000,
    "²",
    " victim-exp",
    "<script>alert(1)</script>",
    "\U0001f600",
    "9223372036854775808",
]
# Values for query-string and form parameters.
PARAM_VALUES: list[Any] = [
    "",
    "-1",
    "9223372036854775807",
    "9223372036854775808",
    "9" * 400,
    "1e309",
    "²",
    "١٢٣",
    "0001-01-01",
    "9999-12-31",
    "0001-01-01T00:00+05:00",
    "9999-12-31T23:59-05:00",
    "9999-12-31T23:59:59.999999+14:00",
    "a\x00b",
    "x" * 5000,
    "<script>alert(1)</script>",
    "javascript:alert(1)",
    "//evil.example/",
    "/w/9223372036854775808/?status=active",
    "\r\n=1+2",
    "\U0001f600" * 50,
    ["1", "2"],
]
NOW = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M")
CONCLUDE_FORM = {"reason_category": ReasonCategory.OTHER.value, "reason_text": "Fuzzing the dialog", "end_date": NOW}
AUDIT_FILTERS = ["workspace", "person", "action", "outcome", "date_from", "date_to", "q", "size"]
# Route name -> method -> [(valid parameters sent along, parameters fuzzed one at a time)].
PARAMS: dict[str, dict[str, list[tuple[dict[str, str], list[str]]]]] = {
    "login": {
        "GET": [({}, ["next"])],
        "POST": [({"username": "tess", "password": "x"}, ["username", "password", "next"])],
    },
    "logout": {"POST": [({}, ["next"])]},
    "admin:login": {"POST": [({"username": "root", "password": "x"}, ["username", "password", "next"])]},
    "home": {"GET": [({}, ["workspace", "q"])]},
    "experiments:experiment-list": {"GET": [({}, ["status", "q", "sort", "page"])]},
    "experiments:experiment-list-refresh": {"POST": [({}, ["list_query"])]},
    "experiments:experiment-force-conclude": {
        "GET": [({}, ["back", "list_query"])],
        "POST": [(CONCLUDE_FORM, ["reason_category", "reason_text", "end_date", "back", "list_query"])],
    },
    "experiments:experiment-decide": {
        "GET": [({}, [])],
        "POST": [({"decision": "none", "note": "Fuzzing the decision"}, ["decision", "note"])],
    },
    "experiments:attempt-status": {"GET": [({}, ["back", "list_query", "was"])]},
    "experiments:attempt-review": {
        "POST": [({"decision": "reject", "note": "Fuzzing the review"}, ["decision", "note", "back", "list_query"])]
    },
    "experiments:attempt-check": {"POST": [({}, ["back", "list_query"])]},
    "experiments:audit-list": {"GET": [({}, [*AUDIT_FILTERS, "cursor"])]},
    "experiments:audit-workspace-list": {"GET": [({}, [*AUDIT_FILTERS, "cursor"])]},
    "experiments:audit-export": {"GET": [({}, AUDIT_FILTERS)]},
    "experiments:bookmark-create": {
        "POST": [
            ({"kind": "experiment"}, ["experiment_id", "note", "next", "strip"]),
            ({"kind": "view", "query": "?status=active"}, ["kind", "query", "title", "note", "next", "strip"]),
            ({"kind": "view", "from_location": "1"}, ["HX-Current-URL", "title"]),
        ]
    },
    "experiments:bookmark-update": {"POST": [({"note": "n", "title": "t"}, ["note", "title", "next", "strip"])]},
    "experiments:bookmark-delete": {"POST": [({}, ["next", "strip"])]},
    "experiments:bookmark-toggle": {"POST": [({}, ["next", "strip"])]},
    "experiments:account-token-create": {
        "POST": [({"name": "Fuzzing", "scope": "read", "days": "30"}, ["name", "scope", "days"])]
    },
    "experiments:workspace-settings": {
        "GET": [({}, ["page"])],
        "POST": [
            (
                {"approval_window_hours": "24"},
                [
                    "webhook_url",
                    "remove_webhook",
                    "email_bookmarkers",
                    "requires_approval",
                    "approval_policy",
                    "approval_window_hours",
                ],
            ),
            (
                {"approval_window_hours": "24", "reminders_shown": "1"},
                ["reminders_shown", "remind_due", "remind_overdue", "remind_undecided", "remind_no_data"],
            ),
        ],
    },
    "experiments:account-notifications": {"GET": [({}, [])], "POST": [({}, ["weekly_digest"])]},
}
# The admin's changelists read these; the rest of the admin is Django's own.
ADMIN_CHANGELIST_PARAMS = ["q", "o", "p", "e", "all", "_to_field", "_popup", "_changelist_filters"]
PERSONAS = ["anonymous", "viewer", "concluder", "admin", "auditor", "superuser"]


@dataclass
class Scene:
    valid: dict[str, Callable[[], str]]
    users: dict[str, Any]


@pytest.fixture
def scene(standin, workspace, pm, teammate, ws_admin, auditor, django_user_model) -> Scene:
    root = django_user_model.objects.create_superuser("root", password="pw-root")
    users = {"viewer": teammate, "concluder": pm, "admin": ws_admin, "auditor": auditor, "superuser": root}
    return Scene(valid=route_values(standin=standin, workspace=workspace, owner=pm), users=users)


class Prober:
    """Sends requests and keeps every one that ended in a 500 or an exception."""

    def __init__(self, client: Client, user: Any) -> None:
        self.client = client
        self.user = user
        self.sent = 0
        self.failures: list[str] = []

    def send(
        self, method: str, path: str, data: dict[str, Any] | str | None = None, *, htmx: bool = False, **extra: Any
    ) -> HttpResponse | None:
        """The answer; None when the request raised (recorded as a failure)."""
        headers = {"HX-Request": "true"} if htmx else {}
        headers.update(extra.pop("headers", {}))
        call = self.client.get if method == "GET" else self.client.post
        self.sent += 1
        try:
            response = call(path, data if data is not None else {}, headers=headers, **extra)
            if response.streaming:
                b"".join(response.streaming_content)  # a failure after the first byte counts too
        except Exception as exc:
            self.failures.append(f"{method} {path[:160]!r} {_short(data)}: raised {type(exc).__name__}: {exc}"[:400])
            return None
        if self.user is not None and "logout" in path:
            self.client.force_login(self.user)  # the fuzzing goes on as the same persona
        exc_info = getattr(response, "exc_info", None)
        if response.status_code == 500 or exc_info:
            error = f"{exc_info[0].__name__}: {exc_info[1]}" if exc_info else "500"
            self.failures.append(f"{method} {path[:160]!r} {_short(data)}: {response.status_code} {error}"[:400])
        return response


def _short(data: Any) -> str:
    text = repr(data)
    return text if len(text) < 160 else text[:160] + "…"


def _param_requests(route: Route, method: str) -> Iterator[tuple[dict[str, Any], dict[str, str]]]:
    """(data, headers) for every hostile value of every parameter the route's view reads."""
    values = PARAM_VALUES
    if route.name.endswith("_changelist") and method == "GET":
        # Django's own code: a sample of the values is enough.
        cases, values = [({}, ADMIN_CHANGELIST_PARAMS)], PARAM_VALUES[::3]
    else:
        cases = PARAMS.get(route.name, {}).get(method, [])
    for base, names in cases:
        for name in names:
            for value in values:
                if name.startswith("HX-"):
                    if isinstance(value, str):
                        yield dict(base), {name: value}
                    continue
                yield {**base, name: value}, {}
        # All at once, and a file where text is expected.
        for value in PARAM_VALUES[::4]:
            yield {**base, **dict.fromkeys(names, value)}, {}
        if method == "POST":
            yield (
                {**base, **{n: SimpleUploadedFile("x.txt", b"\x00\xff") for n in names if not n.startswith("HX-")}},
                {},
            )


def _turned_away(response: HttpResponse | None) -> bool:
    """Whether the persona was refused before the view read any parameter (so fuzzing them proves nothing)."""
    if response is None:
        return False
    return response.status_code in (404, 405) or (response.status_code == 302 and "login/" in response["Location"])


def _fuzz_route(route: Route, scene: Scene, prober: Prober) -> None:
    valid = {name: scene.valid[name]() for name in route.params}
    good = route_path(route, valid)
    assert resolve(good).route == route.template.replace("^", ""), f"the fuzzer built {good} for {route.template}"
    for method in ("GET", "POST"):
        prober.send(method, good)
        answer = prober.send(method, good, htmx=True)
        for name in route.params:
            hostile = INT_PATH_VALUES if name in route.int_params else TEXT_PATH_VALUES
            if route.template.startswith("admin/"):
                hostile = hostile[::3]  # Django's own code: a sample is enough
            for n, value in enumerate(hostile):
                values = {**{k: scene.valid[k]() for k in route.params}, name: value}
                prober.send(method, route_path(route, values), htmx=bool(n % 2))
        if _turned_away(answer):
            continue
        path = route_path(route, {name: scene.valid[name]() for name in route.params})
        for n, (data, headers) in enumerate(_param_requests(route, method)):
            prober.send(method, path, data, htmx=bool(n % 2) or bool(headers), headers=headers)
        if method == "POST":
            prober.send(method, path, json.dumps({"a": [1, {"b": None}]}), content_type="application/json")
            prober.send(method, path, "\x00\xff=%%%", content_type="application/x-www-form-urlencoded")


@pytest.mark.django_db
@pytest.mark.parametrize("persona", PERSONAS)
def test_no_request_answers_500(scene, persona):
    client = Client(raise_request_exception=False)
    user = scene.users.get(persona)
    if user is not None:
        client.force_login(user)
    prober = Prober(client, user)
    for route in ROUTES:
        _fuzz_route(route, scene, prober)
    assert prober.sent > 500  # the walk really happened (about 12,000 requests over the six personas)
    assert prober.failures == [], f"{len(prober.failures)} of {prober.sent} requests failed:\n" + "\n".join(
        prober.failures[:40]
    )


def test_every_parameter_a_view_reads_is_fuzzed():
    """A parameter a view reads by name, or a field of a form it binds, is in PARAMS."""
    read = set()
    for source in (ROOT / "experiments" / "views").glob("*.py"):
        read |= set(re.findall(r"""(?:GET|POST|data)\.get\(\s*["'](\w+)["']""", source.read_text()))
    read |= set(AuditFilterForm.base_fields) | set(ForceConcludeForm.base_fields)
    read |= set(WorkspaceSettingsForm.base_fields) | set(ApiTokenForm.base_fields)
    read |= {"status", "q", "sort", "page"} | set(ExperimentListQuery.__slots__)
    # The home page's HomeQuery reads these two; its third field is derived, not read.
    read |= set(HomeQuery.__slots__) - {"workspace_refused"}
    fuzzed = {name for methods in PARAMS.values() for cases in methods.values() for _, names in cases for name in names}
    fuzzed |= {name for methods in PARAMS.values() for cases in methods.values() for base, _ in cases for name in base}
    assert read - fuzzed == set()


def test_the_fuzzer_walks_every_route_of_the_urlconf():
    names = {route.name for route in ROUTES}
    assert {"experiments:audit-export", "experiments:bookmark-toggle", "admin:index", "login"} <= names
    assert all(name in names for name in PARAMS), set(PARAMS) - names


@pytest.mark.django_db
@pytest.mark.parametrize(
    "path",
    [
        "/w/9223372036854775808/",
        "/audit/18446744073709551616/",
        "/w/1/bookmarks/99999999999999999999/edit/",
        "/w/1/experiments/exp%00id/",
        "/w/1/experiments/exp%1bid/star/",
        "/w/1/experiments/" + "x" * 101 + "/",
    ],
)
def test_an_id_no_row_can_have_is_a_404(client, pm, path):
    client.force_login(pm)
    assert client.get(path).status_code == 404
    assert client.post(path).status_code == 404
