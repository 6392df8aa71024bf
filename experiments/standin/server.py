"""A local stand-in for Mixpanel's Experiments API, over real HTTP.

It serves the published contract (../shared/mixpanel-experiments-api.md) on
127.0.0.1 so the dashboard can be developed, demonstrated, tested and
benchmarked without a Mixpanel account. It is deliberately faithful where the
contract is published and explicit where it is not:

- Paths are served under /api/app (like Mixpanel) and also without that prefix.
- Auth: HTTP Basic against MIXPANEL_SERVICE_ACCOUNT_USERNAME / _SECRET (or their
  *_FILE variants), read per request. Wrong or missing -> 401. A workspace the
  account cannot reach (unknown id, or one switched off with set_access) -> 403,
  which is what Mixpanel answers for a workspace without access.
- Every published experiments route: list and create (GET/POST .../experiments),
  get, update and delete (GET/PATCH/DELETE .../{id}), archive and unarchive
  (POST/DELETE .../{id}/archive), launch, force_conclude (PUT) and decide (PATCH),
  with the published lifecycle: draft -> launch -> active -> force_conclude ->
  concluded -> decide -> success or fail.
- Every answer is valid against the project's schemas of the published contract
  (tests/schemas); error bodies are {"status": "error", "type": ..., "error": ...}.
  Unknown experiment -> 404; a lifecycle step from the wrong state -> 400
  invalid_request (the upstream behaviour is unpublished; a 4xx with the published
  error shape). Rows that break the schema on purpose are added on request
  (add_tolerance_rows; the "[tolerance]" set).
- Faults (see FAULT_KINDS) per server, workspace or experiment, from Python or
  over HTTP under /_control/ (outside /api/app, no auth: local use only).
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import hmac
import http.server
import json
import socket
import struct
import threading
import time
import uuid
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from experiments.secrets import SecretConfigError, read_secret
from experiments.standin.data import (
    DEMO_WORKSPACES,
    SERVICE_ACCOUNT_NAME,
    DemoWorkspace,
    base_experiment,
    build_workspace,
    iso,
    tolerance_rows,
)

API_PREFIX = "/api/app"
# Who the stand-in says last changed an experiment it changed (ids and e-mail are not nullable).
SERVICE_ACCOUNT_ID = 900
SERVICE_ACCOUNT_EMAIL = "service-account@example.com"
# Fields a create or an update may set; anything else is refused, as the contract lists them.
WRITABLE_FIELDS = frozenset({"name", "description", "hypothesis", "tags", "variants", "metrics", "settings"})
CONTROL_PREFIX = "/_control"
MAX_REQUEST_BYTES = 1024 * 1024
LOG_LIMIT = 50_000
BODY_LOG_CHARS = 4096

FAULT_KINDS: dict[str, str] = {
    "latency": "wait latency_ms before answering normally",
    "rate_limit": "429 with Retry-After: retry_after seconds (default 2)",
    "server_error": "500 with an HTML body, change not applied",
    "not_json": "200 with an HTML (non-JSON) body, change not applied",
    "status_error": '200 carrying {"status": "error", ...}, change not applied',
    "reset": "read the request, then reset the connection (TCP RST), change not applied",
    "stall": "send nothing for stall_seconds (default 30), then close: past the client's deadline",
    "trickle": "answer normally (a PUT is applied) but one byte every interval_ms (default 200)",
    "apply_then_drop": "apply the change, then reset the connection without answering",
    "apply_then_500": "apply the change, then answer 500 with an HTML body",
    "noop_200": "answer 200 ok with the experiment unchanged (Mixpanel's lenient lifecycle calls)",
    "unauthorized": "401 with the published error shape",
    "forbidden": "403 with the published error shape",
    "not_found": "404 with the published error shape",
    "redirect": "302 to https://example.invalid/ (clients must not follow)",
    "redirect_slash": "308 to the same address with a trailing slash (same origin: reads may follow, writes never)",
    "huge": "200 whose body is size_bytes long (default 6 MiB): tests the client's size cap",
}

_HTML_ERROR = (
    b"<!DOCTYPE html><html><head><title>500 Internal Server Error</title></head>"
    b"<body><h1>Internal Server Error</h1><p>The proxy could not reach the upstream.</p></body></html>"
)


@dataclass(slots=True)
class Fault:
    """One injected fault. None in a filter means "any"; times None means "every time"."""

    kind: str
    workspace_id: int | None = None
    experiment_id: str | None = None
    method: str | None = None
    times: int | None = None
    latency_ms: int = 0
    retry_after: float = 2
    stall_seconds: float = 30
    interval_ms: int = 200
    size_bytes: int = 6 * 1024 * 1024
    builtin: bool = False

    def matches(self, method: str, workspace_id: int | None, experiment_id: str | None) -> bool:
        return (
            (self.method is None or self.method == method)
            and (self.workspace_id is None or self.workspace_id == workspace_id)
            and (self.experiment_id is None or self.experiment_id == experiment_id)
        )

    @property
    def specificity(self) -> int:
        return (self.experiment_id is not None) * 2 + (self.workspace_id is not None)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One API request as the stand-in saw it. Never holds credentials."""

    method: str
    path: str
    body: str
    auth_ok: bool
    timestamp: float
    status: int | None = None
    fault: str | None = None

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["time"] = iso(dt.datetime.fromtimestamp(self.timestamp, dt.UTC))
        return data


@dataclass
class _Workspace:
    info: DemoWorkspace
    order: list[str] = field(default_factory=list)
    by_id: dict[str, dict[str, Any]] = field(default_factory=dict)
    list_body: bytes | None = None  # serialised list, rebuilt after a change
    archived: set[str] = field(default_factory=set)  # archiving has no field in the published object


@dataclass(slots=True)
class _Reply:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    # Transport behaviour applied after the state change (if any):
    action: str | None = None  # "reset", "stall", "trickle"
    delay: float = 0.0
    fault: Fault | None = None


def _json_bytes(data: Any) -> bytes:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


# The error kind each status carries when a call does not name one.
_ERROR_KINDS = {400: "invalid_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "invalid_request"}


def _error(status: int, message: str, kind: str | None = None) -> _Reply:
    """The published error shape; `type` is required in it."""
    kind = kind or _ERROR_KINDS.get(status, "internal_error" if status >= 500 else "invalid_request")
    return _Reply(status, _json_bytes({"status": "error", "type": kind, "error": message}))


def _read_env_credential(name: str) -> str:
    try:
        return read_secret(name)
    except SecretConfigError:
        return ""


class StandIn:
    """A running (or startable) stand-in for Mixpanel's Experiments API.

    Python API (tests use it through the `standin` fixture in tests/conftest.py):

        standin = StandIn(port=0, experiments_per_workspace=48, seed=1, latency_ms=0).start()
        standin.url                      # "http://127.0.0.1:PORT/api/app" -> MIXPANEL_API_BASE_URL
        standin.experiments(1001)        # deep copies of the current state, in list order
        standin.experiment(1001, exp_id) # one (deep copy), or None
        standin.find(1001, status="active", demo_fault=False)  # first matching, handy in tests
        standin.add_experiment(1001, name="x", status="active")  # returns the full object
        standin.set_status(1001, exp_id, "concluded", end_date="...")
        standin.set_fault("server_error", experiment_id=exp_id, method="PUT", times=1)
        standin.clear_faults(); standin.latency_ms = 50
        standin.requests(method="PUT", path_contains=exp_id)  # [RequestRecord(...)]
        standin.set_access(2002, allowed=False)  # that workspace now answers 403
        standin.reset()                  # state re-seeded, faults, latency and log cleared
        standin.stop()

    Demo workspaces (DEMO_WORKSPACES): 1001 Growth (us), 2002 Payments (eu),
    3003 Search & Discovery (in). Growth also holds "[demo fault]" rows whose
    force conclude always fails as named (built-in faults survive clear_faults).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        experiments_per_workspace: int = 48,
        results_bytes: int = 0,
        seed: int = 1,
        latency_ms: int = 0,
        username: str | None = None,
        secret: str | None = None,
        today: dt.datetime | None = None,
        log: Any = None,
    ) -> None:
        self.host = host
        self.port = port
        self.experiments_per_workspace = max(0, int(experiments_per_workspace))
        self.results_bytes = max(0, int(results_bytes))  # per generated experiment; 0: the demo's small caches
        self.seed = seed
        self._initial_latency_ms = max(0, int(latency_ms))
        self.latency_ms = self._initial_latency_ms
        # Explicit credentials win; otherwise the environment is read per request.
        self._username = username
        self.__secret = secret
        self.today = (today or dt.datetime.now(dt.UTC)).replace(hour=9, minute=0, second=0, microsecond=0)
        self._print = log
        self._lock = threading.RLock()
        self._wake = threading.Event()  # set to release stalled handlers on reset/stop
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._workspaces: dict[int, _Workspace] = {}
        self._builtin_faults: dict[tuple[int, str], Fault] = {}
        self._faults: list[Fault] = []
        self._denied: set[int] = set()
        self._log: deque[RequestRecord] = deque(maxlen=LOG_LIMIT)
        self._extra_workspaces: dict[int, DemoWorkspace] = {}
        self._connections = 0
        self.last_connection_nodelay: bool | None = None

    # -- lifecycle --------------------------------------------------------------
    def start(self) -> StandIn:
        """Bind and serve in a daemon thread; returns self."""
        handler = type("StandInHandler", (_Handler,), {"standin": self})
        server = _Server((self.host, self.port), handler)
        self._server = server
        self.port = server.server_address[1]
        self._wake.clear()
        # A short poll interval makes stop() quick (tests start and stop servers).
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="mixpanel-standin", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release every stalled request."""
        self._wake.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> StandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def root_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """Base URL to put in MIXPANEL_API_BASE_URL."""
        return self.root_url + API_PREFIX

    def reset(self) -> None:
        """Back to the seeded state: experiments, access, faults, latency and request log."""
        with self._lock:
            self._wake.set()  # release anything stalled from a previous test
            self._wake = threading.Event()
            self._workspaces.clear()
            self._builtin_faults.clear()
            self._extra_workspaces.clear()
            self._faults.clear()
            self._denied.clear()
            self._log.clear()
            self._connections = 0
            self.latency_ms = self._initial_latency_ms

    # -- credentials -------------------------------------------------------------
    def _credentials(self) -> tuple[str, str]:
        if self._username is not None and self.__secret is not None:
            return self._username, self.__secret
        return _read_env_credential("MIXPANEL_SERVICE_ACCOUNT_USERNAME"), _read_env_credential(
            "MIXPANEL_SERVICE_ACCOUNT_SECRET"
        )

    def _auth_ok(self, header: str | None) -> bool:
        import base64
        import binascii

        username, secret = self._credentials()
        if not username or not secret or not header or not header.startswith("Basic "):
            return False
        try:
            given = base64.b64decode(header[6:].strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        expected = f"{username}:{secret}".encode()
        return hmac.compare_digest(given, expected)

    # -- state ---------------------------------------------------------------------
    def _known(self) -> dict[int, DemoWorkspace]:
        known = {ws.mixpanel_workspace_id: ws for ws in DEMO_WORKSPACES}
        known.update(self._extra_workspaces)
        return known

    def _ws(self, workspace_id: int) -> _Workspace | None:
        """A workspace's state, built lazily on first use (so start-up stays instant)."""
        with self._lock:
            ws = self._workspaces.get(workspace_id)
            if ws is not None:
                return ws
            info = self._known().get(workspace_id)
            if info is None:
                return None
            ws = _Workspace(info)
            if workspace_id not in self._extra_workspaces:
                rows, faults = build_workspace(
                    info,
                    seed=self.seed,
                    count=self.experiments_per_workspace,
                    today=self.today,
                    results_bytes=self.results_bytes,
                )
                for row in rows:
                    ws.order.append(row["id"])
                    ws.by_id[row["id"]] = row
                for exp_id, (kind, params) in faults.items():
                    self._builtin_faults[(workspace_id, exp_id)] = Fault(
                        kind, workspace_id=workspace_id, experiment_id=exp_id, method="PUT", builtin=True, **params
                    )
            self._workspaces[workspace_id] = ws
            return ws

    def _require_ws(self, workspace_id: int) -> _Workspace:
        ws = self._ws(workspace_id)
        if ws is None:
            raise KeyError(f"the stand-in has no workspace {workspace_id}")
        return ws

    def experiments(self, workspace_id: int) -> list[dict[str, Any]]:
        """Deep copies of a workspace's experiments, in the order the list call returns them."""
        with self._lock:
            ws = self._require_ws(workspace_id)
            return [copy.deepcopy(ws.by_id[i]) for i in ws.order]

    def experiment(self, workspace_id: int, experiment_id: str) -> dict[str, Any] | None:
        """A deep copy of one experiment, or None."""
        with self._lock:
            found = self._require_ws(workspace_id).by_id.get(experiment_id)
            return copy.deepcopy(found) if found is not None else None

    def find(self, workspace_id: int, *, status: str | None = None, demo_fault: bool = False) -> dict[str, Any]:
        """The first experiment with this status; demo-fault rows only when demo_fault=True."""
        with self._lock:
            ws = self._require_ws(workspace_id)
            for exp_id in ws.order:
                exp = ws.by_id[exp_id]
                is_fault = (workspace_id, exp_id) in self._builtin_faults
                if (status is None or exp["status"] == status) and is_fault == demo_fault and not exp["deleted"]:
                    return copy.deepcopy(exp)
        raise LookupError(f"no experiment with status {status!r} in workspace {workspace_id}")

    def builtin_fault(self, workspace_id: int, experiment_id: str) -> Fault | None:
        """The built-in fault of a "[demo fault]" row, if it is one."""
        with self._lock:
            self._ws(workspace_id)
            return self._builtin_faults.get((workspace_id, experiment_id))

    def add_workspace(self, workspace_id: int, name: str = "Extra", region: str = "us") -> None:
        """A new, empty workspace the service account can reach."""
        with self._lock:
            self._extra_workspaces[workspace_id] = DemoWorkspace(workspace_id, name, region, None)
            self._workspaces.pop(workspace_id, None)
            self._denied.discard(workspace_id)

    def mirror_workspace(self, workspace_id: int, source_id: int) -> None:
        """A workspace that answers with another's experiments, sharing them (and their list body).

        Benchmarks need many large workspaces; holding each one's 10,000 experiments in
        the stand-in would cost it gigabytes without making the dashboard's work any different.
        """
        with self._lock:
            source = self._require_ws(source_id)
            self._extra_workspaces[workspace_id] = DemoWorkspace(workspace_id, f"Mirror of {source_id}", "us", None)
            self._workspaces[workspace_id] = source
            self._denied.discard(workspace_id)

    def set_access(self, workspace_id: int, *, allowed: bool) -> None:
        """allowed=False makes every call on that workspace answer 403."""
        with self._lock:
            (self._denied.discard if allowed else self._denied.add)(workspace_id)

    def add_experiment(self, workspace_id: int, **fields: Any) -> dict[str, Any]:
        """Append an experiment (defaults: a fresh UUID, "active", created yesterday); returns a copy."""
        import uuid

        with self._lock:
            ws = self._require_ws(workspace_id)
            exp = base_experiment(
                exp_id=str(fields.pop("id", uuid.uuid4())),
                name=str(fields.pop("name", "Added experiment")),
                status=str(fields.pop("status", "active")),
                created=self.today - dt.timedelta(days=1),
            )
            exp.update(fields)
            if exp["id"] in ws.by_id:
                raise ValueError(f"experiment {exp['id']} already exists")
            ws.order.append(exp["id"])
            ws.by_id[exp["id"]] = exp
            ws.list_body = None
            return copy.deepcopy(exp)

    def add_tolerance_rows(self, workspace_id: int) -> list[dict[str, Any]]:
        """Append the "[tolerance]" rows (schema-breaking on purpose) to a workspace; returns copies."""
        with self._lock:
            ws = self._require_ws(workspace_id)
            rows = tolerance_rows(seed=self.seed, workspace_id=workspace_id, today=self.today)
            for row in rows:
                if row["id"] not in ws.by_id:
                    ws.order.append(row["id"])
                    ws.by_id[row["id"]] = row
            ws.list_body = None
            return copy.deepcopy(rows)

    def set_status(self, workspace_id: int, experiment_id: str, status: str, **fields: Any) -> dict[str, Any]:
        """Change an experiment's status (and any other fields) behind the dashboard's back."""
        with self._lock:
            ws = self._require_ws(workspace_id)
            exp = ws.by_id[experiment_id]
            exp["status"] = status
            exp.update(fields)
            ws.list_body = None
            return copy.deepcopy(exp)

    # -- faults and latency ---------------------------------------------------------
    def set_fault(
        self,
        kind: str,
        *,
        workspace_id: int | None = None,
        experiment_id: str | None = None,
        method: str | None = None,
        times: int | None = None,
        **params: Any,
    ) -> Fault:
        """Inject a fault (see FAULT_KINDS). Filters left None match every request.

        The most specific matching fault wins (experiment, then workspace, then
        server-wide); `times` counts down and removes the fault at zero.
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {', '.join(FAULT_KINDS)}")
        allowed = {"latency_ms", "retry_after", "stall_seconds", "interval_ms", "size_bytes"}
        unknown = set(params) - allowed
        if unknown:
            raise ValueError(f"unknown fault parameter(s): {', '.join(sorted(unknown))}")
        if times is not None and int(times) < 1:
            raise ValueError("times must be at least 1 (or omitted for every time)")
        try:
            numbers = {
                name: float(value) if name in ("retry_after", "stall_seconds") else int(value)
                for name, value in params.items()
            }
        except (TypeError, ValueError):
            raise ValueError("fault parameters must be numbers") from None
        if any(value < 0 for value in numbers.values()):
            raise ValueError("fault parameters must not be negative")
        fault = Fault(
            kind,
            workspace_id=int(workspace_id) if workspace_id is not None else None,
            experiment_id=str(experiment_id) if experiment_id is not None else None,
            method=method.upper() if method else None,
            times=int(times) if times is not None else None,
            **numbers,
        )
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        """Remove injected faults (the demo rows' built-in faults stay)."""
        with self._lock:
            self._faults.clear()

    def faults(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)

    def _take_fault(self, method: str, workspace_id: int | None, experiment_id: str | None) -> Fault | None:
        with self._lock:
            candidates = [f for f in self._faults if f.matches(method, workspace_id, experiment_id)]
            if candidates:
                fault = max(candidates, key=lambda f: f.specificity)
                if fault.times is not None:
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
                return fault
            if workspace_id is not None and experiment_id is not None:
                builtin = self._builtin_faults.get((workspace_id, experiment_id))
                if builtin is not None and builtin.matches(method, workspace_id, experiment_id):
                    return builtin
            return None

    # -- request log ------------------------------------------------------------------
    def requests(self, method: str | None = None, path_contains: str | None = None) -> list[RequestRecord]:
        """API requests received since the last reset, oldest first (control calls excluded)."""
        with self._lock:
            return [
                r
                for r in self._log
                if (method is None or r.method == method.upper()) and (path_contains is None or path_contains in r.path)
            ]

    def clear_requests(self) -> None:
        with self._lock:
            self._log.clear()

    def _record(self, record: RequestRecord) -> None:
        with self._lock:
            self._log.append(record)
        if self._print is not None:
            note = f" [fault: {record.fault}]" if record.fault else ""
            auth = "" if record.auth_ok else " [auth failed]"
            self._print(f"{record.method} {record.path} -> {record.status}{auth}{note}")

    @property
    def connections_opened(self) -> int:
        """TCP connections accepted since the last reset (keep-alive reuse shows as fewer)."""
        return self._connections

    def _count_connection(self) -> None:
        with self._lock:
            self._connections += 1

    def wait(self, seconds: float) -> bool:
        """Sleep up to `seconds`; True if woken early by reset() or stop()."""
        return self._wake.wait(seconds)

    # -- the API ------------------------------------------------------------------------
    def handle_api(self, method: str, path: str, body: bytes) -> _Reply:
        """Route one authenticated API request; state changes happen here, under the lock."""
        parts = [unquote(p) for p in path.strip("/").split("/")]
        if len(parts) < 3 or parts[0] != "workspaces" or parts[2] != "experiments" or len(parts) > 5:
            return _error(404, "Not found")
        try:
            workspace_id = int(parts[1])
        except ValueError:
            return _error(400, "workspace_id must be an integer", "invalid_request")
        experiment_id = parts[3] if len(parts) > 3 else None
        action = parts[4] if len(parts) > 4 else None
        key = ("id" if experiment_id is not None else None, action)
        if key not in _ROUTES:
            return _error(404, "Not found")
        if method not in _ROUTES[key]:
            reply = _error(405, f"Method {method} not allowed", "method_not_allowed")
            reply.headers["Allow"] = ", ".join(_ROUTES[key])
            return reply

        self._ws(workspace_id)  # builds a demo workspace (and its built-in faults) on first use
        fault = self._take_fault(method, workspace_id, experiment_id)
        reply = self._fault_reply(fault, before=True, path=path)
        if reply is not None:
            return reply
        with self._lock:
            ws = self._ws(workspace_id)
            if ws is None or workspace_id in self._denied:
                return _error(403, f"Service account does not have access to workspace {workspace_id}")
            if experiment_id is None:
                reply = self._list_reply(ws) if method == "GET" else self._create(ws, body)
            else:
                exp = ws.by_id.get(experiment_id)
                if exp is None:
                    return _error(404, f"Experiment {experiment_id} not found", "not_found")
                if method == "GET" or (fault is not None and fault.kind == "noop_200"):
                    reply = _Reply(200, _json_bytes({"status": "ok", "results": exp}))
                else:
                    reply = self._change(ws, exp, method, action, body)
        after = self._fault_reply(fault, before=False, path=path)
        if after is not None:
            return after
        if fault is not None and fault.kind in ("latency", "trickle", "noop_200"):
            reply.fault = fault  # recorded in the log; the handler does the latency or trickling
            if fault.kind == "latency":
                reply.delay = fault.latency_ms / 1000
        return reply

    @staticmethod
    def _list_reply(ws: _Workspace) -> _Reply:
        if ws.list_body is None:
            ws.list_body = _json_bytes({"status": "ok", "results": [ws.by_id[i] for i in ws.order]})
        return _Reply(200, ws.list_body)

    def _create(self, ws: _Workspace, body: bytes) -> _Reply:
        """POST .../experiments: a new draft from the writable fields."""
        payload = _payload(body)
        if isinstance(payload, _Reply):
            return payload
        refused = _unwritable(payload, required=("name",))
        if refused is not None:
            return refused
        exp = base_experiment(
            exp_id=str(uuid.uuid4()), name=payload["name"], status="draft", created=dt.datetime.now(dt.UTC)
        )
        exp.update(payload)
        ws.order.append(exp["id"])
        ws.by_id[exp["id"]] = exp
        return self._changed(ws, exp)

    def _change(self, ws: _Workspace, exp: dict[str, Any], method: str, action: str | None, body: bytes) -> _Reply:
        """Every call that changes one experiment: update, delete, archive, and the lifecycle steps."""
        payload = _payload(body)
        if isinstance(payload, _Reply):
            return payload
        now = iso(dt.datetime.now(dt.UTC))
        step = (method, action)
        if step == ("PATCH", None):
            refused = _unwritable(payload, required=())
            if refused is not None:
                return refused
            exp.update(payload)
        elif step == ("DELETE", None):
            exp["deleted"] = exp["deleted"] or now
        elif action == "archive":
            # Archiving has no field in the published object; the stand-in only remembers it.
            (ws.archived.add if method == "POST" else ws.archived.discard)(exp["id"])
        elif action == "launch":
            if exp["status"] != "draft":
                return _wrong_state(exp, "only a draft can be launched")
            exp.update(status="active", start_date=now)
        elif action == "force_conclude":
            end_date = payload.get("end_date", None)
            if end_date is not None and (not isinstance(end_date, str) or not _parses(end_date)):
                return _error(400, "end_date must be an ISO 8601 date-time string", "invalid_request")
            if exp["status"] != "active":
                return _wrong_state(exp, "only an active experiment can be force concluded")
            exp.update(status="concluded", end_date=end_date or now)
        else:  # decide
            refused = _decision_refused(payload, exp)
            if refused is not None:
                return refused
            exp.update(status="success" if payload["success"] else "fail")
        exp["modified"] = now
        return self._changed(ws, exp)

    @staticmethod
    def _changed(ws: _Workspace, exp: dict[str, Any]) -> _Reply:
        exp.update(
            last_modified_by_id=SERVICE_ACCOUNT_ID,
            last_modified_by_name=SERVICE_ACCOUNT_NAME,
            last_modified_by_email=SERVICE_ACCOUNT_EMAIL,
        )
        ws.list_body = None
        return _Reply(200, _json_bytes({"status": "ok", "results": exp}))

    def _fault_reply(self, fault: Fault | None, *, before: bool, path: str = "") -> _Reply | None:
        """The faulty answer, if any. `before`: faults that leave state untouched."""
        if fault is None:
            return None
        reply = _fault_before(fault, path) if before else _fault_after(fault)
        if reply is not None:
            reply.fault = fault
        return reply

    def control(self, method: str, path: str, query: dict[str, list[str]], body: bytes) -> tuple[int, Any]:
        """The /_control/ endpoints (JSON in, JSON out)."""
        route = path[len(CONTROL_PREFIX) :].strip("/")
        try:
            payload = json.loads(body) if body.strip() else {}
        except ValueError:
            return 400, {"status": "error", "error": "body is not valid JSON"}
        if route == "" and method == "GET":
            return 200, {"status": "ok", "api": self.url, "fault_kinds": FAULT_KINDS, "endpoints": _CONTROL_HELP}
        if route == "faults" and method == "GET":
            return 200, {"status": "ok", "faults": [f.as_dict() for f in self.faults()]}
        if route == "faults" and method == "POST":
            if not isinstance(payload, dict) or "kind" not in payload:
                return 400, {"status": "error", "error": 'send a JSON object with "kind"', "fault_kinds": FAULT_KINDS}
            try:
                fault = self.set_fault(**payload)
            except (TypeError, ValueError) as exc:
                return 400, {"status": "error", "error": str(exc)}
            return 201, {"status": "ok", "fault": fault.as_dict()}
        if route == "faults" and method == "DELETE":
            self.clear_faults()
            return 200, {"status": "ok"}
        if route == "latency" and method == "POST":
            value = payload.get("latency_ms") if isinstance(payload, dict) else None
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                return 400, {"status": "error", "error": "latency_ms must be a whole number >= 0"}
            self.latency_ms = value
            return 200, {"status": "ok", "latency_ms": value}
        if route == "tolerance" and method == "POST":
            try:
                rows = self.add_tolerance_rows(int(payload.get("workspace_id")))
            except (TypeError, ValueError, KeyError, AttributeError):
                return 400, {"status": "error", "error": 'send {"workspace_id": <a workspace of the stand-in>}'}
            return 200, {"status": "ok", "added": [row["name"] for row in rows]}
        if route == "reset" and method == "POST":
            self.reset()
            return 200, {"status": "ok"}
        if route == "requests" and method == "GET":
            wanted = query.get("method", [None])[0]
            contains = query.get("path_contains", [None])[0]
            return 200, {"status": "ok", "requests": [r.as_dict() for r in self.requests(wanted, contains)]}
        if route == "requests" and method == "DELETE":
            self.clear_requests()
            return 200, {"status": "ok"}
        if route.startswith("experiments/") and method == "GET":
            try:
                return 200, {"status": "ok", "results": self.experiments(int(route.split("/", 1)[1]))}
            except (ValueError, KeyError):
                return 404, {"status": "error", "error": "no such workspace"}
        return 404, {"status": "error", "error": "unknown control endpoint", "endpoints": _CONTROL_HELP}


_ROUTES: dict[tuple[str | None, str | None], tuple[str, ...]] = {
    (None, None): ("GET", "POST"),
    ("id", None): ("GET", "PATCH", "DELETE"),
    ("id", "archive"): ("POST", "DELETE"),
    ("id", "launch"): ("PUT",),
    ("id", "force_conclude"): ("PUT",),
    ("id", "decide"): ("PATCH",),
}


def _payload(body: bytes) -> dict[str, Any] | _Reply:
    """A request's JSON object (an empty body is {}), or the 400 that refuses it."""
    try:
        payload = json.loads(body) if body.strip() else {}
    except ValueError:
        return _error(400, "Request body is not valid JSON", "invalid_request")
    if not isinstance(payload, dict):
        return _error(400, "Request body must be a JSON object", "invalid_request")
    return payload


def _unwritable(payload: dict[str, Any], *, required: tuple[str, ...]) -> _Reply | None:
    unknown = sorted(set(payload) - WRITABLE_FIELDS)
    if unknown:
        return _error(400, f"Fields that cannot be written: {', '.join(unknown)}", "invalid_request")
    missing = [name for name in required if not isinstance(payload.get(name), str)]
    if missing:
        return _error(400, f"Required text fields missing: {', '.join(missing)}", "invalid_request")
    return None


def _wrong_state(exp: dict[str, Any], rule: str) -> _Reply:
    return _error(400, f"Experiment is {exp['status']}; {rule}", "invalid_request")


def _decision_refused(payload: dict[str, Any], exp: dict[str, Any]) -> _Reply | None:
    if not isinstance(payload.get("success"), bool):
        return _error(400, "success must be true or false", "invalid_request")
    if not isinstance(payload.get("variant", ""), str) or not isinstance(payload.get("message", ""), str):
        return _error(400, "variant and message must be text", "invalid_request")
    if exp["status"] != "concluded":
        return _wrong_state(exp, "only a concluded experiment can be decided")
    return None


def _fault_before(fault: Fault, path: str) -> _Reply | None:
    """The answer of a fault that leaves state untouched; only the chosen one is built."""
    kind = fault.kind
    if kind == "huge":
        return _Reply(200, _huge_body(fault.size_bytes))
    if kind == "rate_limit":
        body = _json_bytes({"status": "error", "error": "Rate limit exceeded", "type": "rate_limited"})
        return _Reply(429, body, headers={"Retry-After": f"{fault.retry_after:g}"})
    if kind == "redirect_slash":
        location = API_PREFIX + "/" + path.strip("/") + "/"
        return _Reply(308, b"", "text/plain", headers={"Location": location})
    simple: dict[str, Any] = {
        "server_error": lambda: _Reply(500, _HTML_ERROR, "text/html; charset=utf-8"),
        "not_json": lambda: _Reply(200, b"<html><body>Service temporarily unavailable</body></html>", "text/html"),
        "status_error": lambda: _Reply(
            200,
            _json_bytes(
                {"status": "error", "type": "internal_error", "error": "Internal error while changing the experiment"}
            ),
        ),
        "reset": lambda: _Reply(0, action="reset"),
        "stall": lambda: _Reply(0, action="stall", delay=fault.stall_seconds),
        "unauthorized": lambda: _error(401, "Invalid or expired service account credentials"),
        "forbidden": lambda: _error(403, "Service account does not have access to this workspace"),
        "not_found": lambda: _error(404, "Experiment not found", "not_found"),
        "redirect": lambda: _Reply(302, b"", "text/plain", headers={"Location": "https://example.invalid/"}),
    }
    make = simple.get(kind)
    return make() if make is not None else None


def _fault_after(fault: Fault) -> _Reply | None:
    """The answer of a fault that comes after the change was applied."""
    if fault.kind == "apply_then_drop":
        return _Reply(0, action="reset")
    if fault.kind == "apply_then_500":
        return _Reply(500, _HTML_ERROR, "text/html; charset=utf-8")
    return None


_CONTROL_HELP = {
    "GET /_control/": "this help",
    "GET /_control/faults": "injected faults",
    "POST /_control/faults": '{"kind": "server_error", "experiment_id": "...", "method": "PUT", "times": 1}',
    "DELETE /_control/faults": "remove injected faults (demo rows keep theirs)",
    "POST /_control/latency": '{"latency_ms": 250} for every API call',
    "POST /_control/tolerance": '{"workspace_id": 1001} adds the "[tolerance]" rows that break the schema on purpose',
    "POST /_control/reset": "re-seed data; clear faults, latency and the request log",
    "GET /_control/requests?method=PUT&path_contains=...": "the request log",
    "DELETE /_control/requests": "clear the request log",
    "GET /_control/experiments/<workspace_id>": "current state of a workspace",
}


def _parses(value: str) -> bool:
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    try:
        dt.datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


def _huge_body(size: int) -> bytes:
    head = b'{"status":"ok","results":[],"padding":"'
    tail = b'"}'
    return head + b"x" * max(0, size - len(head) - len(tail)) + tail


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that hang up (timeouts, the faults themselves) are normal here.
        import sys

        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)


class _Handler(http.server.BaseHTTPRequestHandler):
    standin: StandIn
    protocol_version = "HTTP/1.1"  # keep-alive; every answer has a Content-Length
    # With Nagle on, a reused connection waits ~40 ms for the delayed ACK on every call.
    disable_nagle_algorithm = True
    timeout = 60  # idle keep-alive connections are closed after a minute
    server_version = "MixpanelStandIn/1"

    def setup(self) -> None:
        super().setup()
        self.standin._count_connection()
        # Kept so a test can prove every accepted socket really has Nagle off.
        self.standin.last_connection_nodelay = bool(self.connection.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

    def log_message(self, format: str, *args: Any) -> None:
        pass  # StandIn._record does the useful logging

    def do_GET(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        standin = self.standin
        parts = urlsplit(self.path)
        path = parts.path
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_REQUEST_BYTES:
            self.close_connection = True
            self._send(_error(413 if length > 0 else 400, "Request body missing a valid length or too large"))
            return
        body = self.rfile.read(length) if length else b""

        if path == CONTROL_PREFIX or path.startswith(CONTROL_PREFIX + "/"):
            status, data = standin.control(self.command, path, parse_qs(parts.query), body)
            self._send(_Reply(status, _json_bytes(data)))
            return

        # Mixpanel serves under /api/app; accept the bare paths too so a base URL
        # given without the prefix (e.g. http://127.0.0.1:8765) also works.
        api_path = path[len(API_PREFIX) :] if path.startswith(API_PREFIX + "/") else path
        auth_ok = standin._auth_ok(self.headers.get("Authorization"))
        if standin.latency_ms:
            standin.wait(standin.latency_ms / 1000)
        if not auth_ok:
            reply = _error(401, "Invalid or expired service account credentials")
            reply.headers["WWW-Authenticate"] = 'Basic realm="Mixpanel"'
        else:
            try:
                reply = standin.handle_api(self.command, api_path, body)
            except Exception:  # a bug in the stand-in must still answer, like a real server
                reply = _Reply(500, _HTML_ERROR, "text/html; charset=utf-8")
        standin._record(
            RequestRecord(
                method=self.command,
                path=path,
                body=body[:BODY_LOG_CHARS].decode("utf-8", errors="replace"),
                auth_ok=auth_ok,
                timestamp=time.time(),
                status=reply.status or None,
                fault=reply.fault.kind if reply.fault else None,
            )
        )
        if reply.delay and reply.action is None:
            standin.wait(reply.delay)
        if reply.action == "reset":
            self._reset_connection()
        elif reply.action == "stall":
            standin.wait(reply.delay)
            self.close_connection = True
        elif reply.fault is not None and reply.fault.kind == "trickle":
            self._trickle(reply, reply.fault.interval_ms / 1000)
        else:
            self._send(reply)

    def _headers_for(self, reply: _Reply) -> None:
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()

    def _send(self, reply: _Reply) -> None:
        self._headers_for(reply)
        self.wfile.write(reply.body)

    def _trickle(self, reply: _Reply, interval: float) -> None:
        self.close_connection = True
        self._headers_for(reply)
        for i in range(len(reply.body)):
            self.wfile.write(reply.body[i : i + 1])
            if self.standin.wait(interval):
                return

    def _reset_connection(self) -> None:
        """Close with SO_LINGER 0, so the client gets a TCP RST instead of an answer."""
        self.close_connection = True
        sock = self.connection
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # rfile holds a reference that would keep the descriptor open; wfile does not
        # (and must stay usable: the base class flushes it after we return).
        with contextlib.suppress(OSError):
            self.rfile.close()
        with contextlib.suppress(OSError):
            sock.close()
