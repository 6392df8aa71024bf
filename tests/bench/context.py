"""One benchmark run's shared state: stand-ins, workspaces, people, audit rows, servers.

Everything is made lazily, on first use, so `--only B5` builds just what B5 needs, and
`close()` stops whatever was started.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

from django.test import Client, override_settings

from tests.bench import common, data

# Which stand-in demo workspace carries which list size (the stand-in gives every workspace the
# same number of experiments, so each size gets its own stand-in and its own Django workspace).
SIZE_WORKSPACES = {100: (1001, "us"), 1_000: (2002, "eu"), 10_000: (3003, "in")}
# B3 and B6 use the 1,000-experiment workspace: a typical size; B7 and B8 the large one.
TYPICAL_SIZE = 1_000
LARGE_SIZE = 10_000

TITLES = {
    "B1": "experiments page, warm cache",
    "B2": "experiments page, cold (cache miss)",
    "B3": "force conclude round trip",
    "B4": "audit list",
    "B5": "audit export (CSV)",
    "B6": "served throughput (gunicorn gthread)",
    "B7": "worker memory after many large workspaces",
    "B8": "large list (~30 MB) read cold",
    "B9": "pages right after the list's fresh period, worker running",
}
GOALS = {
    "B1": "p95 at 10,000 <= 2x p95 at 100; p95 at 1,000 <= 20x hello-world",
    "B2": "p95 at 1,000 <= 3x the raw client call",
    "B3": "htmx POST <= 1.25x bare GET + PUT",
    "B4": "each page <= 1.5x its 1,000-entry value; same query count",
    "B5": ">= 25,000 rows/s; peak RSS <= 150 MB",
    "B6": "report req/s and p95, ratio to hello-world",
    "B7": "peak RSS <= 300 MB after the first page of 20 workspaces of 10,000",
    "B8": "cold first page <= 3x the raw download and parse, default settings",
    "B9": "p50 right after the fresh period <= 1.2x warm (workspace page; home page of 5 x 2,000)",
}


class BenchContext:
    def __init__(self, *, plan: common.Plan) -> None:
        self.plan = plan
        self.timings: dict[str, float] = {}
        self._standins: dict[int, Any] = {}
        self._workspaces: dict[int, Any] = {}
        self._people: data.People | None = None
        self._audit: data.AuditGenerator | None = None
        self._closers: list[Callable[[], None]] = []

    # --- dispatch ----------------------------------------------------------------------
    def run(self, bench: str) -> list[common.Result]:
        from tests.bench import audit_bench, experiments_bench, large_bench, owed_bench, served_bench

        runner = {
            "B1": experiments_bench.b1_warm,
            "B2": experiments_bench.b2_cold,
            "B3": experiments_bench.b3_force_conclude,
            "B4": audit_bench.b4_audit_list,
            "B5": audit_bench.b5_export,
            "B6": served_bench.b6_served,
            "B7": large_bench.b7_worker_memory,
            "B8": large_bench.b8_large_cold,
            "B9": owed_bench.b9_fresh_lists,
        }[bench]
        return runner(self)

    def title(self, bench: str) -> str:
        return TITLES[bench]

    def goal(self, bench: str) -> str:
        return GOALS[bench]

    def close(self) -> None:
        while self._closers:
            closer = self._closers.pop()
            with contextlib.suppress(Exception):
                closer()
        for standin in self._standins.values():
            with contextlib.suppress(Exception):
                standin.stop()
        self._standins.clear()

    def on_close(self, closer: Callable[[], None]) -> None:
        self._closers.append(closer)

    def timed_setup(self, name: str, seconds: float) -> None:
        self.timings[name] = round(self.timings.get(name, 0.0) + seconds, 1)

    # --- the Mixpanel stand-in ---------------------------------------------------------
    def standin(self, size: int) -> Any:
        """A running stand-in whose workspaces hold `size` experiments each."""
        standin = self._standins.get(size)
        if standin is None:
            try:
                from experiments.standin import StandIn
            except ImportError as exc:
                raise common.NotMeasured(f"the Mixpanel stand-in is not available ({exc})") from None
            started = time.perf_counter()
            standin = StandIn(port=0, experiments_per_workspace=size, seed=8, latency_ms=0).start()
            self._standins[size] = standin
            mixpanel_id, _ = SIZE_WORKSPACES[size]
            standin.experiments(mixpanel_id)  # build the data now, not inside a timed request
            self.timed_setup("stand-in data", time.perf_counter() - started)
        return standin

    @contextlib.contextmanager
    def upstream(self, size: int) -> Iterator[Any]:
        """Point the dashboard (in this process) at the stand-in of this size."""
        standin = self.standin(size)
        with override_settings(MIXPANEL_API_BASE_URL=standin.url):
            yield standin

    def workspace(self, size: int) -> Any:
        workspace = self._workspaces.get(size)
        if workspace is None:
            mixpanel_id, region = SIZE_WORKSPACES[size]
            from experiments.models import Workspace

            workspace, _ = Workspace.objects.get_or_create(
                region=region,
                mixpanel_workspace_id=mixpanel_id,
                defaults={"name": f"Bench {size:,} experiments", "mixpanel_project_id": 70_000 + size},
            )
            self._workspaces[size] = workspace
        return workspace

    # --- people and clients ----------------------------------------------------------------
    @property
    def people(self) -> data.People:
        if self._people is None:
            self._people = data.ensure_people([self.workspace(size) for size in SIZE_WORKSPACES])
        return self._people

    def client(self, user: Any) -> Client:
        """A logged-in test client (a real session row, as a browser would have)."""
        client = Client()
        client.force_login(user)
        return client

    # --- audit rows --------------------------------------------------------------------
    def audit_rows(self, target: int) -> data.AuditGenerator:
        """At least `target` generated conclusion attempts in the audit tables."""
        if self._audit is None:
            self._audit = data.AuditGenerator(
                workspaces=[self.workspace(size) for size in SIZE_WORKSPACES],
                actors=self.people.actors,
                capacity=self.plan.b4_large,
            )
        seconds = self._audit.grow_to(target)
        if seconds:
            self.timed_setup(f"audit rows to {target:,}", seconds)
        return self._audit
