"""B7-B8: large workspaces. A worker's memory after many of them; a 30 MB list read cold.

B7 serves through gunicorn (one gthread worker) and reads the worker's peak resident set
from /proc. B8 runs in-process like B2, with every setting at its default, against a
stand-in whose experiments carry results caches of realistic size.
"""

from __future__ import annotations

import json
import pickle
import time

import requests
from django.test import override_settings
from django.urls import reverse

from experiments.mixpanel import client as mixpanel
from experiments.mixpanel.client import read_credentials
from experiments.mixpanel.experiment import parse_experiment
from tests.bench import common
from tests.bench.context import LARGE_SIZE, BenchContext
from tests.bench.servers import Gunicorn, session_cookie

B7_WORKSPACES = 20
B7_FIRST_MIXPANEL_ID = 5001
B7_LIMIT_MB = 300
# Bytes of results cache per generated experiment: ~2.9 KB per experiment in all, ~30 MB a list.
B8_RESULTS_BYTES = 2000
B8_LIMIT = 3.0


def b7_worker_memory(ctx: BenchContext) -> list[common.Result]:
    """Peak RSS of one worker after the first page of 20 workspaces of 10,000 experiments each."""
    from experiments.models import Membership, Role, Workspace

    plan = ctx.plan
    count = B7_WORKSPACES if not plan.quick else 6
    standin = ctx.standin(LARGE_SIZE)
    source_id = ctx.workspace(LARGE_SIZE).mixpanel_workspace_id
    pm = ctx.people.pm
    paths = []
    for n in range(count):
        mixpanel_id = B7_FIRST_MIXPANEL_ID + n
        standin.mirror_workspace(mixpanel_id, source_id)
        workspace, _ = Workspace.objects.get_or_create(
            region="us", mixpanel_workspace_id=mixpanel_id, defaults={"name": f"Bench large {n + 1}"}
        )
        Membership.objects.get_or_create(user=pm, workspace=workspace, defaults={"role": Role.CONCLUDER})
        paths.append(reverse("experiments:experiment-list", args=[workspace.pk]))
    cookie = session_cookie(pm)
    # Default settings: no cap raised, the default bound of indexed experiments per process.
    server = Gunicorn(workers=1, threads=4, env={"MIXPANEL_API_BASE_URL": standin.url}).start()
    ctx.on_close(server.stop)
    try:
        status, _ = server.request(reverse("bench-hello"), {"Cookie": cookie})
        if status != 200:
            raise common.NotMeasured(f"hello-world answered HTTP {status} through gunicorn")
        idle = max(server.memory_mb("VmRSS").values())
        started = time.perf_counter()
        for path in paths:
            status, body = server.request(path, {"Cookie": cookie}, timeout=120)
            if status != 200 or body.count(b'<tr id="exp-') != 50:
                raise common.NotMeasured(f"{path} answered HTTP {status} without a full first page")
        seconds = time.perf_counter() - started
        peak = max(server.memory_mb("VmHWM").values())
        now = max(server.memory_mb("VmRSS").values())
    finally:
        server.stop()
    return [
        common.Result(
            bench="B7",
            name=f"worker peak RSS after the first page of {count} workspaces of {LARGE_SIZE:,}",
            goal=f"peak RSS <= {B7_LIMIT_MB} MB",
            measured={"peak_mb": peak, "rss_after_mb": now, "seconds": round(seconds, 1)},
            baseline={"idle_rss_mb": idle},
            compare="peak_mb",
            limit=B7_LIMIT_MB,
            note=f"gunicorn gthread, 1 worker x 4 threads, default settings; {count} cold first pages in a row",
        ).judge()
    ]


def _raw_download_and_parse(url: str, auth: tuple[str, str]) -> int:
    """What the list costs at its barest: one GET of the whole body and json.loads of it."""
    response = requests.get(url, auth=auth, timeout=120)
    response.raise_for_status()
    return len(json.loads(response.content)["results"])


def b8_large_cold(ctx: BenchContext) -> list[common.Result]:
    """The cold first page of 10,000 experiments with ~3 KB results caches, default settings."""
    from experiments.selectors import experiment_list as list_selectors
    from experiments.standin import StandIn

    plan = ctx.plan
    started = time.perf_counter()
    standin = StandIn(
        port=0, experiments_per_workspace=LARGE_SIZE, results_bytes=B8_RESULTS_BYTES, seed=8, latency_ms=0
    ).start()
    ctx.on_close(standin.stop)
    workspace = ctx.workspace(LARGE_SIZE)
    mixpanel_id = workspace.mixpanel_workspace_id
    standin.experiments(mixpanel_id)
    ctx.timed_setup("stand-in data (B8)", time.perf_counter() - started)
    client = ctx.client(ctx.people.pm)
    page_url = reverse("experiments:experiment-list", args=[workspace.pk])
    list_url = f"{standin.url}/workspaces/{mixpanel_id}/experiments"
    auth = read_credentials()
    body_bytes = len(requests.get(list_url, auth=auth, timeout=120).content)
    page_samples: list[float] = []
    raw_samples: list[float] = []
    with override_settings(MIXPANEL_API_BASE_URL=standin.url):
        for i in range(plan.b8_warmup + plan.b8_requests):
            list_selectors.invalidate_experiment_list(workspace=workspace)
            began = time.perf_counter()
            response = client.get(page_url)
            elapsed = time.perf_counter() - began
            if response.status_code != 200 or response.content.count(b'<tr id="exp-') != 50:
                raise common.NotMeasured(f"the cold page answered HTTP {response.status_code} without 50 rows")
            began = time.perf_counter()
            if _raw_download_and_parse(list_url, auth) != LARGE_SIZE:
                raise common.NotMeasured("the raw list did not hold every experiment")
            raw_elapsed = time.perf_counter() - began
            if i >= plan.b8_warmup:
                page_samples.append(elapsed)
                raw_samples.append(raw_elapsed)
        summaries = tuple(mixpanel.client_for(workspace).list_experiments(mixpanel_id))
    page, raw = common.summary(page_samples), common.summary(raw_samples)
    full = tuple(parse_experiment(e) for e in standin.experiments(mixpanel_id))
    sizes = {
        "summaries_pickled_mb": _mb(len(pickle.dumps(summaries, protocol=pickle.HIGHEST_PROTOCOL))),
        "summaries_packed_mb": _mb(len(list_selectors._pack(summaries))),
    }
    before = {"full_objects_pickled_mb": _mb(len(pickle.dumps(full, protocol=pickle.HIGHEST_PROTOCOL)))}
    return [
        common.Result(
            bench="B8",
            name=f"cold first page, {LARGE_SIZE:,} experiments ({_mb(body_bytes)} MB) vs raw GET + json.loads (p50)",
            goal=f"<= {B8_LIMIT:g}x the raw download and parse, default settings",
            measured={"body_mb": _mb(body_bytes), **page},
            baseline=raw,
            ratio=common.ratio(page["p50_ms"], raw["p50_ms"]),
            limit=B8_LIMIT,
            note=f"p95 ratio {common.ratio(page['p95_ms'], raw['p95_ms'])}; results caches ~{B8_RESULTS_BYTES} B each",
        ).judge(),
        common.Result(
            bench="B8",
            name="shared (Redis) copy of that list: pickled vs compressed",
            goal="report",
            measured=sizes,
            baseline=before,
            ratio=common.ratio(sizes["summaries_packed_mb"], before["full_objects_pickled_mb"]),
            note="summaries pickled, then zlib level 1 (what the cache stores); before: full objects pickled",
        ).judge(),
    ]


def _mb(size: int) -> float:
    return round(size / 1_000_000, 2)
