"""B9: the workspace page and the home page right after the list copies' fresh period has passed,
with the worker keeping lists fresh, against the same pages warm.

Five workspaces of 2,000 experiments (one stand-in workspace and four mirrors of it, so the
stand-in holds the data once). The worker's housekeeping thread (services.worker.Housekeeping,
what `manage.py db_worker` runs beside its tasks) runs in this process, ticking every half
second, so it competes with the measured requests for the interpreter, as a worker would for a
core. Each round, interleaved: a warm request (the copy fresh and indexed here), then the fresh
period made to pass (its fresh key removed, as its expiry would) and the measured request; then
the worker reads the list again (awaited, unmeasured), and the first view of its new copy is
timed apart and reported (with this process's index of it dropped, as a web process other
than the worker's would not hold it): it is the cost of fresh data, which a page paid before too.
"""

from __future__ import annotations

import time
from typing import Any

from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.test import override_settings
from django.urls import reverse
from django.utils import timezone

from tests.bench import common
from tests.bench.context import BenchContext

SIZE = 2_000
WORKSPACES = 5
SOURCE_ID = 1001
MIRROR_IDS = tuple(99_001 + n for n in range(WORKSPACES))
GOAL = "p50 right after the fresh period <= 1.2x the same page warm, worker running"


def _setup(ctx: BenchContext) -> tuple[Any, list[Any], Any]:
    from experiments.models import DigestPeriod, Membership, Role, Workspace
    from experiments.standin import StandIn

    started = time.perf_counter()
    standin = StandIn(port=0, experiments_per_workspace=SIZE, seed=9, latency_ms=0).start()
    ctx.on_close(standin.stop)
    standin.experiments(SOURCE_ID)
    for mixpanel_id in MIRROR_IDS:
        standin.mirror_workspace(mixpanel_id, SOURCE_ID)
    workspaces = [
        Workspace.objects.get_or_create(
            region="us", mixpanel_workspace_id=mixpanel_id, defaults={"name": f"B9 workspace {n + 1}"}
        )[0]
        for n, mixpanel_id in enumerate(MIRROR_IDS)
    ]
    user, _ = get_user_model().objects.get_or_create(username="b9-pm", defaults={"first_name": "Bea"})
    for workspace in workspaces:
        Membership.objects.get_or_create(user=user, workspace=workspace, defaults={"role": Role.CONCLUDER})
    # This week's digest counts as sent: the worker's ticks here keep lists, nothing else.
    year, week, _ = timezone.now().isocalendar()
    DigestPeriod.objects.get_or_create(year=year, week=week)
    ctx.timed_setup("stand-in data (B9)", time.perf_counter() - started)
    return standin, workspaces, user


def _expire(workspaces: list[Any]) -> None:
    from experiments.selectors import experiment_list as list_selectors

    cache.delete_many([list_selectors.list_cache_key(workspace=ws, suffix="fresh") for ws in workspaces])


def _tokens(workspaces: list[Any]) -> list[Any]:
    from experiments.selectors import experiment_list as list_selectors

    return [cache.get(list_selectors.list_cache_key(workspace=ws, suffix="good-token")) for ws in workspaces]


def _await_worker(workspaces: list[Any], before: list[Any], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while any(now == then for now, then in zip(_tokens(workspaces), before, strict=True)):
        if time.monotonic() > deadline:
            raise common.NotMeasured("the worker did not read the expired lists again within a minute")
        time.sleep(0.05)


def _forget_indexes(workspaces: list[Any]) -> None:
    """The worker indexed its new copy in this process; a web process would not have it, so the
    first view of it here unpacks and indexes it as that web process would."""
    from experiments.selectors import experiment_list as list_selectors

    with list_selectors._LIST_INDEXES_LOCK:
        for workspace in workspaces:
            list_selectors._LIST_INDEXES.pop(list_selectors._list_cache_base(workspace), None)


def _timed_get(client: Any, url: str) -> float:
    began = time.perf_counter()
    response = client.get(url)
    elapsed = time.perf_counter() - began
    if response.status_code != 200:
        raise common.NotMeasured(f"GET {url} answered HTTP {response.status_code}")
    return elapsed


def b9_fresh_lists(ctx: BenchContext) -> list[common.Result]:
    from experiments.services.worker import Housekeeping

    plan = ctx.plan
    standin, workspaces, user = _setup(ctx)
    client = ctx.client(user)
    pages = {
        "workspace page": (reverse("experiments:experiment-list", args=[workspaces[0].pk]), workspaces[:1]),
        "home page": (reverse("home"), workspaces),
    }
    rounds = plan.b2_requests
    results = []
    settings = {
        "MIXPANEL_API_BASE_URL": standin.url,
        "EXPERIMENT_LIST_CACHE_SECONDS": 300,
        "WORKER_HEARTBEAT_SECONDS": 0.5,
        # Only B9's pages count as viewed: the lists earlier benchmarks read stay unread here.
        "EXPERIMENT_LIST_VIEWED_SECONDS": 5,
    }
    with override_settings(**settings):
        housekeeping = Housekeeping(worker_id="bench-b9")
        for url, _ in pages.values():  # the lists read once: "a list the dashboard has read before"
            _timed_get(client, url)
        housekeeping.start()
        time.sleep(2.0)  # its first ticks (the heartbeat row, a look at every list) pass unmeasured
        try:
            for name, (url, expiring) in pages.items():
                warm: list[float] = []
                expired: list[float] = []
                first_new: list[float] = []
                for i in range(plan.b2_warmup + rounds):
                    warm_s = _timed_get(client, url)
                    before = _tokens(expiring)
                    _expire(expiring)
                    expired_s = _timed_get(client, url)
                    _await_worker(expiring, before)
                    _forget_indexes(expiring)
                    new_s = _timed_get(client, url)
                    if i >= plan.b2_warmup:
                        warm.append(warm_s)
                        expired.append(expired_s)
                        first_new.append(new_s)
                measured, baseline, after = common.summary(expired), common.summary(warm), common.summary(first_new)
                shape = f"{len(expiring)} x {SIZE:,}"
                results.append(
                    common.Result(
                        bench="B9",
                        name=f"{name} right after the fresh period vs warm (p50), {shape}",
                        goal=GOAL,
                        measured={**measured, "first_view_of_new_copy_p50_ms": after["p50_ms"]},
                        baseline=baseline,
                        ratio=common.ratio(measured["p50_ms"], baseline["p50_ms"]),
                        limit=1.2,
                        note="the first view of the worker's new copy (unpacking and indexing it) is reported apart",
                    ).judge()
                )
        finally:
            housekeeping.stop()
            housekeeping.join(timeout=30)
    return results
