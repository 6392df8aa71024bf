"""The one in-memory Mixpanel for tests: experiments per workspace, scripted faults.

Duck-types experiments.mixpanel.MixpanelClient (the seam services and selectors take,
and views reach through mixpanel.client_for; see install). It keeps upstream state,
so a PUT that is "applied" changes what the next read returns, which is what
reconciling depends on. Experiments are raw JSON, parsed with the real parsers.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Callable
from typing import Any

from django.db import connection

from experiments.mixpanel import client as mixpanel
from experiments.mixpanel.errors import MixpanelNotFound
from experiments.mixpanel.experiment import (
    ConcludeResult,
    Experiment,
    ExperimentSummary,
    format_end_date,
    parse_experiment,
    summarize_experiment,
)

EXP_ID = "0b9c4b8e-4a57-4c1e-9a55-5b0d1f6b7a01"
START = "2026-11-01T09:00:00Z"


def raw_experiment(exp_id: str = EXP_ID, status: str = "active", **extra: Any) -> dict[str, Any]:
    data = {
        "id": exp_id,
        "name": "Checkout button <b>colour</b>",
        "status": status,
        "start_date": START,
        "end_date": None,
        "created": "2026-10-30T12:00:00Z",
        "variants": [{"key": "control"}, {"key": "green"}],
        "exposures_cache": {"control": 120, "green": 118},
        "last_modified_by_name": "Someone Else",
    }
    data.update(extra)
    return data


def exp_json(n: int, status: str = "active", **extra: Any) -> dict[str, Any]:
    """A plausible experiment; `n` makes id, name and dates distinct and sortable."""
    start = dt.datetime(2026, 1, 1, 9, 0, tzinfo=dt.UTC) + dt.timedelta(days=n)
    data: dict[str, Any] = {
        "id": f"00000000-0000-4000-8000-{n:012d}",
        "name": f"Experiment {n:05d}",
        "status": status,
        "start_date": None if status == "draft" else start.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "end_date": (start + dt.timedelta(days=14)).strftime("%Y-%m-%dT%H:%M:%SZ")
        if status in ("concluded", "success", "fail")
        else None,
        "created": "2025-12-20T10:00:00Z",
        "modified": "2025-12-21T10:00:00Z",
        "creator_name": "Casey Creator",
        "creator_email": "casey@example.com",
        "last_modified_by_name": "Morgan Modifier",
        "tags": ["growth"],
        "hypothesis": "Green buttons convert better",
        "description": "A test of the checkout button",
        "variants": [{"key": "control"}, {"key": "green"}],
        "metrics": [{"name": "Checkout rate"}],
        "exposures_cache": {"control": 100, "green": 110},
        "feature_flag": {"key": "checkout-green"},
    }
    data.update(extra)
    return data


class ProcessDied(BaseException):
    """Stands for the server process dying mid-call: nothing after it runs."""


class FakeMixpanel:
    """Upstream state plus scripted behaviour of the next calls.

    experiments: raw JSON per Mixpanel workspace id, or a plain list for workspace 1001
    (the `workspace` fixture's).
    get: None (serve the state), an exception to raise, or a callable returning raw JSON.
    put: "apply" (conclude and answer), "answer:<status>" (200 returning that status,
    state unchanged), an exception (raised, nothing applied), ("apply", exc) (applied,
    then the exception), or a callable(self, ws, exp_id, end_date).
    list_error: an exception the list call raises (None: serve the state).
    details: what get_experiment answers for an id instead of its state (a fuller read).
    patch (decide): "apply" (decide and answer), "answer:<status>", an exception, or
    ("apply", exc), as for put.
    """

    def __init__(
        self,
        experiments: dict[int, list[dict[str, Any]]] | list[dict[str, Any]] | None = None,
        *,
        get: Any = None,
        put: Any = "apply",
        put_delay: float = 0.0,
        patch: Any = "apply",
        check_no_transaction: bool = False,
    ) -> None:
        self.state: dict[tuple[int, str], dict[str, Any]] = {}
        if experiments is None:
            experiments = {1001: [raw_experiment()]}
        elif isinstance(experiments, list):
            experiments = {1001: experiments}
        for ws, items in experiments.items():
            for item in items:
                self.state[(ws, item["id"])] = dict(item)
        self.get = get
        self.put = put
        self.list_error: BaseException | None = None
        self.details: dict[str, dict[str, Any]] = {}
        self.put_delay = put_delay
        self.patch = patch
        self.patch_bodies: list[dict[str, Any]] = []
        self.check_no_transaction = check_no_transaction
        self.calls: list[tuple[str, int, str]] = []
        self.atomic_during_calls: list[bool] = []
        self.call_threads: list[int] = []  # threading.get_ident() of each call, in order
        self._lock = threading.Lock()

    # -- helpers for tests ----------------------------------------------------------
    @property
    def puts(self) -> list[tuple[str, int, str]]:
        return [c for c in self.calls if c[0] == "put"]

    @property
    def patches(self) -> list[tuple[str, int, str]]:
        return [c for c in self.calls if c[0] == "patch"]

    @property
    def put_calls(self) -> list[str]:
        return [exp_id for kind, _, exp_id in self.calls if kind == "put"]

    @property
    def get_calls(self) -> list[str]:
        return [exp_id for kind, _, exp_id in self.calls if kind == "get"]

    @property
    def list_calls(self) -> int:
        return sum(1 for kind, _, _ in self.calls if kind == "list")

    def status_of(self, ws: int = 1001, exp_id: str = EXP_ID) -> str:
        return self.state[(ws, exp_id)]["status"]

    def add(self, item: dict[str, Any], ws: int = 1001) -> None:
        """A new experiment upstream (made outside the dashboard)."""
        with self._lock:
            self.state[(ws, item["id"])] = dict(item)

    def experiments(self, ws: int = 1001) -> list[dict[str, Any]]:
        """The workspace's experiments as Mixpanel holds them now, in list order."""
        return [dict(item) for (w, _), item in self.state.items() if w == ws]

    def _record(self, kind: str, ws: int, exp_id: str) -> None:
        with self._lock:
            self.calls.append((kind, ws, exp_id))
            self.call_threads.append(threading.get_ident())
        if self.check_no_transaction:
            self.atomic_during_calls.append(connection.in_atomic_block)

    def _apply(self, ws: int, exp_id: str, end_date: Any) -> dict[str, Any]:
        with self._lock:
            item = self.state[(ws, exp_id)]
            item["status"] = "concluded"
            item["end_date"] = format_end_date(end_date)
            return dict(item)

    # -- the client interface --------------------------------------------------------
    def list_experiments(self, workspace_id: int) -> list[ExperimentSummary]:
        self._record("list", workspace_id, "")
        if self.list_error is not None:
            raise self.list_error
        return [summarize_experiment(dict(v)) for (ws, _), v in self.state.items() if ws == workspace_id]

    def get_experiment(self, workspace_id: int, experiment_id: str) -> Experiment:
        self._record("get", workspace_id, experiment_id)
        if isinstance(self.get, BaseException):
            raise self.get
        if callable(self.get):
            return parse_experiment(self.get(workspace_id, experiment_id))
        item = self.details.get(experiment_id) or self.state.get((workspace_id, experiment_id))
        if item is None:
            raise MixpanelNotFound("Mixpanel has no such experiment or workspace (HTTP 404).", http_status=404)
        return parse_experiment(dict(item))

    def force_conclude(self, workspace_id: int, experiment_id: str, *, end_date: Any) -> ConcludeResult:
        self._record("put", workspace_id, experiment_id)
        started = time.monotonic()
        if self.put_delay:
            time.sleep(self.put_delay)
        put = self.put
        if callable(put) and not isinstance(put, type):
            return put(self, workspace_id, experiment_id, end_date)
        if isinstance(put, BaseException):
            raise put
        if isinstance(put, tuple):
            self._apply(workspace_id, experiment_id, end_date)
            raise put[1]
        if put == "apply":
            return self.applied(workspace_id, experiment_id, end_date, started=started)
        if isinstance(put, str) and put.startswith("answer:"):
            returned = dict(self.state[(workspace_id, experiment_id)], status=put.split(":", 1)[1])
        else:
            raise AssertionError(f"unknown put behaviour {put!r}")
        return self._answer(returned, started)

    def decide(
        self, workspace_id: int, experiment_id: str, *, success: bool, variant: str, message: str
    ) -> ConcludeResult:
        self._record("patch", workspace_id, experiment_id)
        self.patch_bodies.append({"success": success, "variant": variant, "message": message})
        started = time.monotonic()
        patch = self.patch
        if isinstance(patch, BaseException):
            raise patch
        if isinstance(patch, tuple):
            self._decide(workspace_id, experiment_id, success)
            raise patch[1]
        if patch == "apply":
            return self._answer(self._decide(workspace_id, experiment_id, success), started)
        if isinstance(patch, str) and patch.startswith("answer:"):
            returned = dict(self.state[(workspace_id, experiment_id)], status=patch.split(":", 1)[1])
            return self._answer(returned, started)
        raise AssertionError(f"unknown patch behaviour {patch!r}")

    def _decide(self, ws: int, exp_id: str, success: bool) -> dict[str, Any]:
        with self._lock:
            item = self.state[(ws, exp_id)]
            item["status"] = "success" if success else "fail"
            return dict(item)

    def applied(
        self, workspace_id: int, experiment_id: str, end_date: Any, *, started: float | None = None
    ) -> ConcludeResult:
        """Conclude upstream and answer 200 (for scripted put callables, without recording a call)."""
        return self._answer(self._apply(workspace_id, experiment_id, end_date), started or time.monotonic())

    @staticmethod
    def _answer(returned: dict[str, Any], started: float) -> ConcludeResult:
        return ConcludeResult(
            experiment=parse_experiment(returned),
            http_status=200,
            duration_ms=round((time.monotonic() - started) * 1000),
            raw_body=json.dumps({"status": "ok", "results": returned}),
        )


def install(monkeypatch: Any, fake: FakeMixpanel) -> FakeMixpanel:
    """Make experiments.mixpanel.client_for hand out `fake` (for commands and views)."""
    factory: Callable[[Any], FakeMixpanel] = lambda workspace: fake  # noqa: E731
    monkeypatch.setattr(mixpanel, "client_for", factory)
    return fake
