"""B4 (audit list at 1,000 and 1,000,000 attempts) and B5 (CSV export through gunicorn).

B4 cannot interleave its two sizes (the table grows in between), so each phase also times a
hello-world page, interleaved with the audit pages: if the shared machine was busier during
one phase, the hello-world figures show it next to the result.
"""

from __future__ import annotations

import http.client
import re
import time
from typing import Any
from urllib.parse import urlencode

from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from tests.bench import common
from tests.bench.context import BenchContext
from tests.bench.experiments_bench import get_ok
from tests.bench.servers import Gunicorn, session_cookie

# The audit list's cursor tokens: "b<id>" = rows older than id (experiments.selectors.audit).
_CURSOR_LINK = re.compile(r"[?&;]([A-Za-z_]+)=b([0-9]+)")


def _name_shown(html: str, name: str) -> bool:
    return re.search(re.escape(name) + r"(?![0-9])", html) is not None


def _cursor_param(html: str) -> str:
    """The query parameter the "older" link uses for its cursor, read from the first page."""
    match = _CURSOR_LINK.search(html.replace("&amp;", "&"))
    if match is None:
        raise common.NotMeasured("the audit list's first page has no link to older entries")
    return match.group(1)


def _pages(ctx: BenchContext, size: int) -> dict[str, tuple[str, bool, str]]:
    """The three pages of B4 at this size: (url, htmx, a name the page must show)."""
    from experiments.models import AttemptState, ConclusionAttempt

    client = ctx.client(ctx.people.auditor)
    list_url = reverse("experiments:audit-list")
    newest = ConclusionAttempt.objects.order_by("-id").values_list("id", "experiment_name").first()
    first_html = get_ok(client, list_url).content.decode()
    if not _name_shown(first_html, newest[1]):
        raise common.NotMeasured("the audit list's first page does not show the newest attempt")
    param = _cursor_param(first_html)
    # A page `size // 2` entries deep: ids are dense, so the cursor is plain arithmetic.
    cursor = newest[0] - size // 2 + 1
    deep_first = ConclusionAttempt.objects.filter(id__lt=cursor).order_by("-id").values_list("experiment_name")[0][0]
    failed = (
        ConclusionAttempt.objects.filter(state=AttemptState.FAILED).order_by("-id").values_list("experiment_name")[0][0]
    )
    return {
        "first": (list_url, False, newest[1]),
        "deep": (f"{list_url}?{urlencode({param: f'b{cursor}'})}", True, deep_first),
        "filtered": (f"{list_url}?{urlencode({'outcome': AttemptState.FAILED})}", True, failed),
    }


def _measure_phase(ctx: BenchContext, size: int) -> dict[str, dict[str, Any]]:
    plan = ctx.plan
    client = ctx.client(ctx.people.auditor)
    hello = reverse("bench-hello")
    pages = _pages(ctx, size)
    stats: dict[str, dict[str, Any]] = {}
    for key, (url, htmx, name) in pages.items():
        html = get_ok(client, url, htmx=htmx).content.decode()
        if not _name_shown(html, name):
            raise common.NotMeasured(f"the audit list's {key} page ({url}) does not show {name!r}")
        with CaptureQueriesContext(connection) as queries:
            get_ok(client, url, htmx=htmx)
        stats[key] = {"queries": len(queries.captured_queries)}
    samples: dict[str, list[float]] = {key: [] for key in [*pages, "hello"]}
    for i in range(plan.warmup + plan.b4_requests):
        for key, (url, htmx, _) in [*pages.items(), ("hello", (hello, False, ""))]:
            started = time.perf_counter()
            get_ok(client, url, htmx=htmx)
            if i >= plan.warmup:
                samples[key].append(time.perf_counter() - started)
    for key, values in samples.items():
        stats.setdefault(key, {}).update(common.summary(values))
    return stats


def b4_audit_list(ctx: BenchContext) -> list[common.Result]:
    plan = ctx.plan
    small, large = plan.b4_small, plan.b4_large
    phases = {}
    for size in (small, large):
        generator = ctx.audit_rows(size)
        count = generator.count()
        if count != size:
            raise common.NotMeasured(f"the audit table holds {count:,} attempts, expected {size:,}")
        phases[size] = _measure_phase(ctx, size)
    results = []
    labels = {
        "first": "first page",
        "deep": f"page {large // 2:,} deep (cursor)",
        "filtered": "filtered page (outcome=failed)",
    }
    for key, label in labels.items():
        big, base = phases[large][key], phases[small][key]
        hello_big, hello_base = phases[large]["hello"]["p50_ms"], phases[small]["hello"]["p50_ms"]
        results.append(
            common.Result(
                bench="B4",
                name=f"{label}: {large:,} vs {small:,} entries (p50)",
                goal=f"<= 1.5x the {small:,}-entry value",
                measured={"entries": large, **big, "hello_p50_ms": hello_big},
                baseline={"entries": small, **base, "hello_p50_ms": hello_base},
                ratio=common.ratio(big["p50_ms"], base["p50_ms"]),
                limit=1.5,
                note=(
                    f"p95 ratio {common.ratio(big['p95_ms'], base['p95_ms'])}; hello-world p50 ratio between "
                    f"the phases {common.ratio(hello_big, hello_base)} (machine load)"
                ),
            ).judge()
        )
    queries_big = {key: phases[large][key]["queries"] for key in labels}
    queries_base = {key: phases[small][key]["queries"] for key in labels}
    same = queries_big == queries_base
    results.append(
        common.Result(
            bench="B4",
            name="SQL queries per page, same at both sizes",
            goal="query count identical across sizes",
            measured={"entries": large, **queries_big},
            baseline={"entries": small, **queries_base},
            ratio=1.0 if same else None,
            limit=1.0,
        ).judge()
    )
    return results


# --- B5 --------------------------------------------------------------------------------
def _floor_rate(count: int, user: Any) -> float:
    """Rows per second of the export's own database read, without encoding or HTTP (the floor)."""
    from experiments.selectors.audit import AuditFilters, audit_export_rows

    started = time.perf_counter()
    read = 0
    # The selector streams from a server-side cursor on PostgreSQL, as the export does.
    for _ in audit_export_rows(user=user, filters=AuditFilters()):
        read += 1
    elapsed = time.perf_counter() - started
    if read != count:
        raise common.NotMeasured(f"read {read:,} rows, expected {count:,}")
    return read / elapsed


def _stream(port: int, path: str, cookie: str) -> tuple[int, int, float, float]:
    """GET path, reading the body as it streams: (status, rows, seconds, seconds to first byte)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    started = time.perf_counter()
    try:
        conn.request("GET", path, headers={"Cookie": cookie})
        response = conn.getresponse()
        first = 0.0
        lines = 0
        while chunk := response.read1(1 << 20):
            if not first:
                first = time.perf_counter() - started
            lines += chunk.count(b"\n")
        return response.status, lines - 1, time.perf_counter() - started, first
    finally:
        conn.close()


def b5_export(ctx: BenchContext) -> list[common.Result]:
    from experiments.models import ConclusionAttempt

    plan = ctx.plan
    ctx.audit_rows(plan.b4_large)
    count = ConclusionAttempt.objects.count()
    cookie = session_cookie(ctx.people.auditor)
    server = Gunicorn(workers=1, threads=4).start()
    ctx.on_close(server.stop)
    try:
        status, _ = server.request(reverse("experiments:audit-list"), {"Cookie": cookie})
        if status != 200:
            raise common.NotMeasured(f"the audit list answered HTTP {status} through gunicorn")
        idle = max(server.memory_mb("VmRSS").values())
        path = reverse("experiments:audit-export", args=["csv"])
        status, rows, seconds, first_byte = _stream(server.port, path, cookie)
        if status != 200:
            raise common.NotMeasured(f"GET {path} answered HTTP {status}")
        peak = max(server.memory_mb("VmHWM").values())
    finally:
        server.stop()
    rate = rows / seconds
    floor = _floor_rate(count, ctx.people.auditor)
    note = f"{rows:,} rows in {seconds:.1f} s, first byte after {first_byte * 1000:.0f} ms; 1 gthread worker"
    if rows != count:
        raise common.NotMeasured(f"the export streamed {rows:,} rows, expected {count:,}")
    return [
        common.Result(
            bench="B5",
            name=f"export rate, {count:,} rows",
            goal=">= 25,000 rows/s",
            measured={"rows_per_s": round(rate), "rows": rows, "seconds": round(seconds, 2)},
            baseline={"db_read_rows_per_s": round(floor)},
            ratio=common.ratio(floor, rate),
            compare="rows_per_s",
            limit=25_000,
            at_least=True,
            note=note + "; ratio = how many times slower than reading the rows from the database",
        ).judge(),
        common.Result(
            bench="B5",
            name="peak memory of the serving process",
            goal="<= 150 MB",
            measured={"peak_mb": peak},
            baseline={"idle_mb": idle},
            ratio=common.ratio(peak, idle),
            compare="peak_mb",
            limit=150,
            note="VmHWM of the gunicorn worker (includes Django itself); baseline = its VmRSS before the export",
        ).judge(),
    ]
