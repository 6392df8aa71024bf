"""B1-B3: the experiments page warm and cold, and the force-conclude round trip.

All three run in-process with django.test.Client (a real session, the full middleware
stack, real templates) against the Mixpanel stand-in over real HTTP. Requests of the
things compared are interleaved, so a burst of load from elsewhere on the machine hits
both sides of a ratio alike.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from typing import Any
from urllib.parse import urlencode

from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from experiments.mixpanel import client as mixpanel
from tests.bench import common
from tests.bench.context import TYPICAL_SIZE, BenchContext

HTMX = {"HX-Request": "true"}
FORM_ENCODED = "application/x-www-form-urlencoded"
# Fields the experiments page searches (experiments.selectors.experiment_list._search_blob):
# name, id, creator, hypothesis, tags.
_WORD = re.compile(r"[a-z]{4,}")


def get_ok(client: Any, url: str, *, htmx: bool = False) -> Any:
    """GET that must answer 200; anything else means the page could not be measured."""
    response = client.get(url, headers=HTMX if htmx else {})
    if response.status_code != 200:
        raise common.NotMeasured(f"GET {url} answered HTTP {response.status_code}")
    return response


def _rows_in(response: Any, workspace_pk: int) -> int:
    """Table rows of experiments on the page (each row is a <tr id="exp-...">)."""
    return response.content.decode().count('<tr id="exp-')


def _blob(exp: dict[str, Any]) -> str:
    tags = exp.get("tags") if isinstance(exp.get("tags"), list) else []
    parts = [exp.get("name"), exp.get("id"), exp.get("creator_name"), exp.get("creator_email"), exp.get("hypothesis")]
    return "\n".join(str(p) for p in [*parts, *tags] if p).casefold()


def search_term(lists: list[list[dict[str, Any]]], share: float = 0.55) -> tuple[str, float]:
    """Two letters of the data that match at least half of every list, closest to `share`.

    At least half of the smallest list (100) is a full page of 50 rows, so every size
    compared renders the same 50 rows and the ratio measures the list's size alone.
    """
    blobs = [[_blob(e) for e in listed] for listed in lists]
    candidates = {b[i : i + 2] for b in blobs[0] for i in range(len(b) - 1) if b[i : i + 2].isalpha()}
    best, best_share = "", -1.0
    for word in sorted(candidates):
        shares = [sum(1 for blob in group if word in blob) / len(group) for group in blobs]
        if min(shares) >= 0.5 and abs(shares[0] - share) < abs(best_share - share):
            best, best_share = word, shares[0]
    return best, best_share


def case_variant(term: str, n: int) -> str:
    """The n-th upper/lower-case spelling of `term`: the same matches, a new search each time.

    The page memoises recent searches per (status, q, sort); a person typing searches
    something new, so every timed search is one the page has not seen yet.
    """
    letters = list(term)
    for i in range(len(letters)):
        if n >> i & 1:
            letters[i] = letters[i].upper()
    return "".join(letters)


def _page_url(workspace: Any) -> str:
    return reverse("experiments:experiment-list", args=[workspace.pk])


# --- B1 --------------------------------------------------------------------------------
def b1_warm(ctx: BenchContext) -> list[common.Result]:
    plan = ctx.plan
    client = ctx.client(ctx.people.pm)
    hello = reverse("bench-hello")
    sizes = plan.list_sizes
    urls: dict[int, str] = {}
    term, _ = search_term([ctx.standin(size).experiments(ctx.workspace(size).mixpanel_workspace_id) for size in sizes])
    if not term:
        raise common.NotMeasured("no search term matches at least half of every list")
    shares: dict[int, float] = {}
    for size in sizes:
        workspace = ctx.workspace(size)
        urls[size] = _page_url(workspace)
        mixpanel_id = workspace.mixpanel_workspace_id
        listed = ctx.standin(size).experiments(mixpanel_id)
        shares[size] = round(sum(1 for e in listed if term in _blob(e)) / len(listed), 3)
        with ctx.upstream(size):  # fill the cache: the only request that talks to the stand-in
            first = get_ok(client, urls[size])
        if _rows_in(first, workspace.pk) == 0:
            raise common.NotMeasured(f"the experiments page of {size:,} experiments shows no rows")
        searched = get_ok(client, f"{urls[size]}?q={term}", htmx=True)
        rows = _rows_in(searched, workspace.pk)
        if rows != 50:
            raise common.NotMeasured(f"a search for {term!r} shows {rows} rows, not a full page of 50, at {size:,}")
    get_ok(client, hello)

    samples: dict[str, list[float]] = {"hello": []}
    for size in sizes:
        samples[f"first {size}"] = []
        samples[f"search {size}"] = []
    for i in range(plan.warmup + plan.b1_requests):
        timed = i >= plan.warmup
        for key, url, htmx in [
            ("hello", hello, False),
            *[(f"first {s}", urls[s], False) for s in sizes],
            *[(f"search {s}", f"{urls[s]}?q={case_variant(term, i)}", True) for s in sizes],
        ]:
            started = time.perf_counter()
            get_ok(client, url, htmx=htmx)
            if timed:
                samples[key].append(time.perf_counter() - started)

    stats = {key: common.summary(values) for key, values in samples.items()}
    small, mid, large = sizes[0], TYPICAL_SIZE, sizes[-1]
    note_search = f"search {term!r} (a new spelling each request, htmx; 50 rows at every size) matches {shares}"
    results = []
    for case, label in (("first", "first page"), ("search", "search (50 rows)")):
        results.append(
            common.Result(
                bench="B1",
                name=f"{label}: {large:,} vs {small:,} experiments (p95)",
                goal=f"p95 at {large:,} <= 2x p95 at {small:,}",
                measured={"size": large, **stats[f"{case} {large}"]},
                baseline={"size": small, **stats[f"{case} {small}"]},
                ratio=common.ratio(stats[f"{case} {large}"]["p95_ms"], stats[f"{case} {small}"]["p95_ms"]),
                limit=2.0,
                note=note_search if case == "search" else "",
            ).judge()
        )
        results.append(
            common.Result(
                bench="B1",
                name=f"{label}: {mid:,} experiments vs hello-world (p95)",
                goal="p95 at 1,000 <= 20x hello-world",
                measured={"size": mid, **stats[f"{case} {mid}"]},
                baseline=stats["hello"],
                ratio=common.ratio(stats[f"{case} {mid}"]["p95_ms"], stats["hello"]["p95_ms"]),
                limit=20.0,
            ).judge()
        )
    return results


# --- B2 --------------------------------------------------------------------------------
def b2_cold(ctx: BenchContext) -> list[common.Result]:
    from experiments.selectors import experiment_list as list_selectors

    plan = ctx.plan
    client = ctx.client(ctx.people.pm)
    page: dict[int, dict[str, Any]] = {}
    raw: dict[int, dict[str, Any]] = {}
    for size in plan.list_sizes:
        workspace = ctx.workspace(size)
        url = _page_url(workspace)
        with ctx.upstream(size):
            upstream = mixpanel.client_for(workspace)
            page_samples: list[float] = []
            raw_samples: list[float] = []
            for i in range(plan.b2_warmup + plan.b2_requests):
                list_selectors.invalidate_experiment_list(workspace=workspace)
                started = time.perf_counter()
                response = get_ok(client, url)
                elapsed = time.perf_counter() - started
                if _rows_in(response, workspace.pk) == 0:
                    raise common.NotMeasured(f"the cold experiments page of {size:,} experiments shows no rows")
                started = time.perf_counter()
                listed = upstream.list_experiments(workspace.mixpanel_workspace_id)
                raw_elapsed = time.perf_counter() - started
                if len(listed) != size:
                    raise common.NotMeasured(f"the client read {len(listed)} experiments, expected {size}")
                if i >= plan.b2_warmup:
                    page_samples.append(elapsed)
                    raw_samples.append(raw_elapsed)
        page[size] = common.summary(page_samples)
        raw[size] = common.summary(raw_samples)

    small, mid, large = plan.list_sizes[0], TYPICAL_SIZE, plan.list_sizes[-1]
    thousands = (large - small) / 1000
    per_1000_page = round((page[large]["p50_ms"] - page[small]["p50_ms"]) / thousands, 2)
    per_1000_raw = round((raw[large]["p50_ms"] - raw[small]["p50_ms"]) / thousands, 2)
    return [
        common.Result(
            bench="B2",
            name=f"cold page at {mid:,} vs raw client list call (p95)",
            goal="p95 at 1,000 <= 3x the raw client call",
            measured={"size": mid, **page[mid]},
            baseline={"size": mid, **raw[mid]},
            ratio=common.ratio(page[mid]["p95_ms"], raw[mid]["p95_ms"]),
            limit=3.0,
        ).judge(),
        common.Result(
            bench="B2",
            name="cost per 1,000 experiments, fetch + parse (p50)",
            goal="report",
            measured={"page_ms_per_1000": per_1000_page, **{f"page_p95_ms_{s}": page[s]["p95_ms"] for s in page}},
            baseline={"raw_ms_per_1000": per_1000_raw, **{f"raw_p95_ms_{s}": raw[s]["p95_ms"] for s in raw}},
            ratio=common.ratio(per_1000_page, per_1000_raw),
            note="slope of p50 from 100 to 10,000 experiments; stand-in without added latency",
        ).judge(),
    ]


# --- B3 --------------------------------------------------------------------------------
def _concludable(standin: Any, mixpanel_id: int, now: dt.datetime) -> list[str]:
    """Active experiments of the stand-in that a force conclude can end now."""
    ids = []
    for exp in standin.experiments(mixpanel_id):
        if exp["status"] != "active" or exp.get("deleted") or standin.builtin_fault(mixpanel_id, exp["id"]):
            continue
        start = exp.get("start_date")
        if not start or dt.datetime.fromisoformat(start.replace("Z", "+00:00")) > now - dt.timedelta(hours=1):
            continue
        if "/" in exp["id"]:
            continue
        ids.append(exp["id"])
    return ids


_SQL_TABLE = re.compile(r'(?:FROM|INTO|UPDATE)\s+"?(\w+)"?', re.IGNORECASE)


def statement_name(sql: str) -> str:
    """A statement as the README names it: its verb and first table ("INSERT experiments_auditentry")."""
    verb = sql.split(None, 1)[0].upper()
    if "pg_advisory_xact_lock" in sql:
        return "SELECT pg_advisory_xact_lock"
    table = _SQL_TABLE.search(sql)
    return f"{verb} {table.group(1)}" if table else verb


def b3_force_conclude(ctx: BenchContext) -> list[common.Result]:
    from experiments.models import AttemptState, ConclusionAttempt

    plan = ctx.plan
    size = TYPICAL_SIZE
    workspace = ctx.workspace(size)
    mixpanel_id = workspace.mixpanel_workspace_id
    client = ctx.client(ctx.people.pm)
    list_url = _page_url(workspace)
    standin = ctx.standin(size)
    now = timezone.now()
    candidates = _concludable(standin, mixpanel_id, now)
    needed = 2 * (plan.warmup + plan.b3_iterations)
    if len(candidates) < needed:
        raise common.NotMeasured(f"the stand-in has {len(candidates)} concludable experiments; {needed} needed")
    end_date = (now - dt.timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M")
    view_samples: list[float] = []
    bare_samples: list[float] = []
    upstream_calls: list[int] = []
    statements: list[str] = []
    with ctx.upstream(size):
        upstream = mixpanel.client_for(workspace)
        standin.latency_ms = 50
        try:
            for i in range(plan.warmup + plan.b3_iterations):
                via_view, via_client = candidates[2 * i], candidates[2 * i + 1]
                # The person is on the experiments page (warm list) when they press the button;
                # a success invalidates the list, so this re-reads it untimed.
                get_ok(client, list_url)
                url = reverse("experiments:experiment-force-conclude", args=[workspace.pk, via_view])
                form = {
                    "reason_category": "significance",
                    "reason_text": "Benchmark: reached significance",
                    "end_date": end_date,
                    "back": "list",
                }
                body = urlencode(form)  # how htmx sends a form (not multipart)
                standin.clear_requests()
                if i == 0:
                    # One untimed warm-up press counts its SQL statements (capturing costs time).
                    with CaptureQueriesContext(connection) as captured:
                        response = client.post(url, body, content_type=FORM_ENCODED, headers=HTMX)
                    statements = [statement_name(q["sql"]) for q in captured.captured_queries]
                    elapsed = 0.0
                else:
                    started = time.perf_counter()
                    response = client.post(url, body, content_type=FORM_ENCODED, headers=HTMX)
                    elapsed = time.perf_counter() - started
                upstream_calls.append(len(standin.requests()))
                if response.status_code != 200:
                    raise common.NotMeasured(f"POST {url} answered HTTP {response.status_code}")
                state = ConclusionAttempt.objects.filter(workspace=workspace, experiment_id=via_view).values_list(
                    "state", flat=True
                )
                if list(state) != [AttemptState.SUCCEEDED]:
                    raise common.NotMeasured(f"force conclude through the view left attempts {list(state)}")

                started = time.perf_counter()
                upstream.get_experiment(mixpanel_id, via_client)
                result = upstream.force_conclude(mixpanel_id, via_client, end_date=now - dt.timedelta(minutes=1))
                bare_elapsed = time.perf_counter() - started
                if not result.experiment.is_concluded:
                    raise common.NotMeasured("the bare force conclude did not conclude")
                if i >= plan.warmup:
                    view_samples.append(elapsed)
                    bare_samples.append(bare_elapsed)
        finally:
            standin.latency_ms = 0
    view, bare = common.summary(view_samples), common.summary(bare_samples)
    return [
        common.Result(
            bench="B3",
            name="htmx POST through the stack vs bare GET + PUT (p50)",
            goal="ratio <= 1.25",
            measured=view,
            baseline=bare,
            ratio=common.ratio(view["p50_ms"], bare["p50_ms"]),
            limit=1.25,
            note=(
                f"stand-in latency 50 ms per call; p95 ratio {common.ratio(view['p95_ms'], bare['p95_ms'])}; "
                f"upstream calls per POST: {sorted(set(upstream_calls))} (the bare side makes 2); "
                f"SQL statements per press: {len(statements)} ({', '.join(statements)})"
            ),
        ).judge()
    ]
