"""`python -m tests.bench.run [--quick] [--only B1,B4]`: run the benchmarks, print a table, write JSON.

The parent process makes a throwaway database per engine (an SQLite file in a temporary
directory; a `desk_bench_<pid>` database on the PostgreSQL server DATABASE_URL names), runs
the benchmarks in a child process pointed at it (Django is configured once per process),
and drops the database afterwards, also after a failure or Ctrl-C. It never opens the
database DATABASE_URL names except to create and drop its own next to it.

Exit status: 0 when every benchmark measured (whether or not its goal holds), 1 when the
harness or a measured piece failed so that a figure is missing.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[2]
OUT_DIR = ROOT / ".bench"
BENCHES = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B9")
# Benchmarks run in this order: the bulk audit rows (B4) are older than anything the real
# service writes (B3), so ids and timestamps grow together as in production.
RUN_ORDER = ("B1", "B2", "B4", "B5", "B3", "B6", "B7", "B8", "B9")
REDIS_DB = 14  # a database number of the benchmark's own; only keys with this run's prefix are touched


class HarnessError(Exception):
    """The harness itself cannot go on (no database server, a child that crashed...)."""


def _terminate(signum: int, frame: Any) -> None:
    # SIGTERM unwinds like Ctrl-C, so every `finally` (servers, databases) runs.
    raise KeyboardInterrupt


# --- the parent: databases, child processes, report -----------------------------------------
@contextlib.contextmanager
def throwaway_database(engine: str, server_url: str | None) -> Iterator[str]:
    """A DATABASE_URL of a new, empty database, removed when the block ends."""
    if engine == "sqlite":
        directory = tempfile.mkdtemp(prefix="desk-bench-")
        try:
            yield f"sqlite:///{directory}/bench.sqlite3"
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        return
    import psycopg

    assert server_url is not None
    name = f"desk_bench_{os.getpid()}"
    try:
        admin = psycopg.connect(server_url, autocommit=True, connect_timeout=5)
    except psycopg.Error as exc:
        raise HarnessError(f"cannot connect to the PostgreSQL server in DATABASE_URL: {exc}") from None
    with admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
        parts = urlsplit(server_url)
        try:
            yield urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def redis_url_for_bench() -> str | None:
    """REDIS_URL's server (or 127.0.0.1:6379 when it answers) with the benchmark's own db number."""
    given = os.environ.get("REDIS_URL", "")
    if given:
        parts = urlsplit(given)
        return urlunsplit((parts.scheme, parts.netloc, f"/{REDIS_DB}", "", ""))
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            if sock.recv(16).startswith(b"+PONG"):
                return f"redis://127.0.0.1:6379/{REDIS_DB}"
    except OSError:
        pass
    return None


def child_environment(db_url: str, redis_url: str | None, prefix: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="tests.bench.settings",
        DATABASE_URL=db_url,
        DJANGO_DEBUG="0",
        DJANGO_SECRET_KEY="bench-" + secrets.token_urlsafe(32),
        DJANGO_HTTPS="0",
        DJANGO_STATIC_MANIFEST="0",
        DJANGO_ALLOWED_HOSTS="testserver,127.0.0.1,localhost",
        MIXPANEL_SERVICE_ACCOUNT_USERNAME="bench.stand-in",
        MIXPANEL_SERVICE_ACCOUNT_SECRET="bench-stand-in-" + secrets.token_hex(8),
        # Benchmarks of a warm cache must not see it expire halfway through.
        EXPERIMENT_LIST_CACHE_SECONDS="3600",
        BENCH_CACHE_PREFIX=prefix,
        PYTHONUNBUFFERED="1",
    )
    for name in ("MIXPANEL_SERVICE_ACCOUNT_USERNAME_FILE", "MIXPANEL_SERVICE_ACCOUNT_SECRET_FILE"):
        env.pop(name, None)
    if redis_url:
        env["REDIS_URL"] = redis_url
    else:
        env.pop("REDIS_URL", None)
    return env


def run_child(engine: str, db_url: str, args: argparse.Namespace, redis_url: str | None) -> dict[str, Any]:
    prefix = f"desk-bench-{os.getpid()}-{engine}"
    with tempfile.NamedTemporaryFile(prefix="desk-bench-", suffix=".json", delete=False) as handle:
        out = Path(handle.name)
    command = [sys.executable, "-m", "tests.bench.run", "--child", engine, "--out", str(out)]
    if args.quick:
        command.append("--quick")
    if args.only:
        command += ["--only", args.only]
    try:
        return _run_child(command, out, engine, db_url, redis_url, prefix)
    finally:
        out.unlink(missing_ok=True)


def _run_child(
    command: list[str], out: Path, engine: str, db_url: str, redis_url: str | None, prefix: str
) -> dict[str, Any]:
    child = subprocess.Popen(command, cwd=ROOT, env=child_environment(db_url, redis_url, prefix))
    try:
        code = child.wait()
    except KeyboardInterrupt:
        # The child got the same Ctrl-C (same process group) or gets our SIGTERM now; let it
        # stop its servers before the database goes.
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        raise
    finally:
        if redis_url:
            _delete_redis_prefix(redis_url, prefix)
    try:
        report = json.loads(out.read_text())
    except (OSError, ValueError):
        report = None
    if report is None:
        raise HarnessError(f"the {engine} benchmark process exited with status {code} and wrote no results")
    report["exit_code"] = code
    return report


def _delete_redis_prefix(redis_url: str, prefix: str) -> None:
    try:
        import redis

        client = redis.Redis.from_url(redis_url, socket_timeout=2)
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
    except Exception as exc:  # cleaning up must never hide the results
        print(f"note: could not delete this run's Redis keys ({exc})", file=sys.stderr)


def machine() -> dict[str, Any]:
    memory_gib = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
    return {
        "nproc": os.cpu_count(),
        "memory_gib": memory_gib,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.3f}" if value < 10 else f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _figures(values: dict[str, Any]) -> str:
    return ", ".join(f"{k} {_fmt(v)}" for k, v in values.items() if k != "n" and not isinstance(v, (dict, list)))


def _limit(row: dict[str, Any]) -> str:
    if row["limit"] is None:
        return "report"
    sign = ">=" if row.get("at_least") else "<="
    what = "" if row.get("compare", "ratio") == "ratio" else f" {row['compare']}"
    return f"{sign} {row['limit']:,g}{what}"


def print_table(engine: str, report: dict[str, Any]) -> None:
    print()
    facts = f"{report.get('database', '')}; cache {report.get('cache', '?')}; {report.get('seconds', 0):.0f} s"
    print(f"== {engine} ({facts})")
    header = f"{'':<3} {'what':<58} {'ratio':>7}  {'goal':<22} holds"
    print(header)
    print("-" * 100)
    for row in report["results"]:
        if row.get("error"):
            print(f"{row['bench']:<3} {row['name'][:58]:<58} {'-':>7}  {_limit(row):<22} NOT MEASURED")
            print(f"{'':<4}{row['error']}")
            continue
        holds = "yes" if row["holds"] else "NO"
        print(f"{row['bench']:<3} {row['name'][:58]:<58} {_fmt(row['ratio']):>7}  {_limit(row):<22} {holds}")
        print(f"{'':<4}measured: {_figures(row['measured'])}")
        print(f"{'':<4}baseline: {_figures(row['baseline'])}")
        if row.get("note"):
            print(f"{'':<4}{row['note']}")
    if report.get("timings"):
        print("setup: " + ", ".join(f"{k} {v:.1f} s" for k, v in report["timings"].items()))


def parent_main(args: argparse.Namespace) -> int:
    server_url = os.environ.get("DATABASE_URL", "")
    engines = ["sqlite"]
    if server_url.startswith(("postgres://", "postgresql://")):
        engines.append("postgresql")
    if args.engine:
        if args.engine not in engines:
            raise HarnessError(f"--engine {args.engine}: DATABASE_URL does not point at a PostgreSQL server")
        engines = [args.engine]
    redis_url = redis_url_for_bench()
    started = time.perf_counter()
    payload: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "only": args.only or "",
        "machine": machine(),
        "engines": {},
    }
    status = 0
    for engine in engines:
        with throwaway_database(engine, server_url or None) as db_url:
            report = run_child(engine, db_url, args, redis_url)
        payload["engines"][engine] = report
        print_table(engine, report)
        if report["exit_code"] != 0 or any(r.get("error") for r in report["results"]):
            status = 1
    payload["seconds"] = round(time.perf_counter() - started, 1)
    OUT_DIR.mkdir(exist_ok=True)
    (OUT_DIR / "latest.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
    held = [r["holds"] for e in payload["engines"].values() for r in e["results"]]
    print()
    print(
        f"{sum(1 for h in held if h)} of {len(held)} goals hold; {payload['seconds']:.0f} s in all; "
        f"figures in {OUT_DIR.relative_to(ROOT)}/latest.json"
    )
    return status


# --- the child: Django configured against the throwaway database ----------------------------
def child_main(args: argparse.Namespace) -> int:
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection

    from tests.bench import common
    from tests.bench.context import BenchContext

    started = time.perf_counter()
    call_command("migrate", verbosity=0, interactive=False)
    plan = common.Plan.for_mode(quick=args.quick)
    wanted = _wanted(args.only)
    results: list[common.Result] = []
    failed = False
    ctx = BenchContext(plan=plan)
    try:
        for bench in RUN_ORDER:
            if bench not in wanted:
                continue
            print(f"[{args.child}] {bench} ...", flush=True)
            bench_started = time.perf_counter()
            try:
                results.extend(ctx.run(bench))
            except common.NotMeasured as exc:
                results.append(common.not_measured(bench, ctx.title(bench), ctx.goal(bench), str(exc)))
            except Exception as exc:
                failed = True
                traceback.print_exc()
                results.append(common.not_measured(bench, ctx.title(bench), ctx.goal(bench), f"harness error: {exc!r}"))
            print(f"[{args.child}] {bench} done in {time.perf_counter() - bench_started:.1f} s", flush=True)
    finally:
        # Stopping servers must not be cut short by a second Ctrl-C.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        ctx.close()
    results.sort(key=lambda r: BENCHES.index(r.bench))
    cache = settings.CACHES["default"]["BACKEND"].rsplit(".", 1)[-1]
    report = {
        "engine": args.child,
        "database": _database_version(connection),
        "cache": cache,
        "quick": args.quick,
        "seconds": round(time.perf_counter() - started, 1),
        "timings": ctx.timings,
        "results": [r.as_dict() for r in results],
    }
    Path(args.out).write_text(json.dumps(report, default=str))
    return 1 if failed else 0


def _database_version(connection: Any) -> str:
    if connection.vendor == "sqlite":
        return "SQLite " + ".".join(map(str, connection.Database.sqlite_version_info))
    version = connection.pg_version  # e.g. 160004
    return f"PostgreSQL {version // 10000}.{version % 10000}"


def _wanted(only: str | None) -> set[str]:
    if not only:
        return set(BENCHES)
    wanted = {item.strip().upper() for item in only.split(",") if item.strip()}
    unknown = wanted - set(BENCHES)
    if unknown:
        raise SystemExit(f"unknown benchmark(s): {', '.join(sorted(unknown))}; choose from {', '.join(BENCHES)}")
    return wanted


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer requests (under two minutes)")
    parser.add_argument("--only", help="comma-separated benchmarks, e.g. B1,B4")
    parser.add_argument("--engine", choices=("sqlite", "postgresql"), help="run on this database only")
    parser.add_argument("--child", choices=("sqlite", "postgresql"), help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    _wanted(args.only)
    signal.signal(signal.SIGTERM, _terminate)
    # Ctrl-C must clean up even when started from a shell that ignores SIGINT in background jobs.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        if args.child:
            return child_main(args)
        return parent_main(args)
    except HarnessError as exc:
        print(f"make bench: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if not args.child:
            print("make bench: interrupted; servers stopped and throwaway databases removed", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
