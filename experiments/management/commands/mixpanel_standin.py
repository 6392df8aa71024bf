"""Run the local Mixpanel stand-in in the foreground (what `make run` starts)."""

from __future__ import annotations

import errno
import signal
import threading
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from experiments.mixpanel.client import read_credentials
from experiments.mixpanel.errors import MixpanelConfigError
from experiments.standin import DEMO_FAULT_ROWS, DEMO_WORKSPACES, FAULT_KINDS, StandIn


class Command(BaseCommand):
    help = (
        "Serve a local stand-in for Mixpanel's Experiments API on 127.0.0.1, with seeded demo "
        "workspaces and fault injection. Ctrl-C stops it."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", type=int, default=8765, help="port on 127.0.0.1 (0: any free port)")
        parser.add_argument("--experiments", type=int, default=48, help="experiments per demo workspace")
        parser.add_argument("--seed", type=int, default=1, help="seed of the demo data")
        parser.add_argument("--latency-ms", type=int, default=0, help="added to every API call")
        parser.add_argument("--quiet", action="store_true", help="do not print each request")
        parser.add_argument(
            "--tolerance",
            action="store_true",
            help='add the "[tolerance]" rows, which break the published schema on purpose, to every demo workspace',
        )

    def handle(self, *args: Any, **options: Any) -> None:
        for flag in ("port", "experiments", "seed", "latency_ms"):
            if options[flag] < 0:
                raise CommandError(f"--{flag.replace('_', '-')} must not be negative.")
        if options["port"] > 65535:
            raise CommandError("--port must be at most 65535.")
        try:
            username, _ = read_credentials()
        except MixpanelConfigError as exc:
            raise CommandError(
                f"{exc.detail} The stand-in checks HTTP Basic auth against the same variables the dashboard "
                "sends (make run sets demo values)."
            ) from None

        standin = StandIn(
            port=options["port"],
            experiments_per_workspace=options["experiments"],
            seed=options["seed"],
            latency_ms=options["latency_ms"],
            log=None if options["quiet"] else self._log,
        )
        if options["tolerance"]:
            for ws in DEMO_WORKSPACES:
                standin.add_tolerance_rows(ws.mixpanel_workspace_id)
        try:
            standin.start()
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise CommandError(
                    f"Port {options['port']} is already in use: stop whatever holds it or pass --port."
                ) from None
            raise CommandError(f"Cannot listen on port {options['port']}: {exc.strerror}") from None

        stop = threading.Event()
        previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            self._banner(standin, username, options)
            # wait() with a timeout keeps the main thread responsive to Ctrl-C.
            while not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            signal.signal(signal.SIGTERM, previous)
            standin.stop()
            self.stdout.write("Mixpanel stand-in stopped.")

    def _log(self, line: str) -> None:
        self.stdout.write(f"[stand-in] {line}")

    def _banner(self, standin: StandIn, username: str, options: dict[str, Any]) -> None:
        out = self.stdout.write
        out(self.style.SUCCESS(f"Mixpanel stand-in listening on {standin.root_url}"))
        out(f"  API base URL: {standin.url}  (set MIXPANEL_API_BASE_URL to it)")
        out(f"  Accepts HTTP Basic auth as {username!r} with MIXPANEL_SERVICE_ACCOUNT_SECRET.")
        out(f"  {options['experiments']} experiments per workspace, seed {options['seed']}.")
        out("  Workspaces:")
        for ws in DEMO_WORKSPACES:
            out(f"    {ws.mixpanel_workspace_id}  {ws.name} ({ws.region})")
        out(f"  Growth's '[demo fault]' rows always fail on force conclude ({len(DEMO_FAULT_ROWS)} kinds).")
        out("  Inject faults (kinds: " + ", ".join(FAULT_KINDS) + "):")
        out(
            f"    curl -X POST {standin.root_url}/_control/faults -d "
            '\'{"kind": "server_error", "method": "PUT", "times": 1}\''
        )
        out(f"    curl -X POST {standin.root_url}/_control/latency -d '{{\"latency_ms\": 500}}'")
        out(f"    curl {standin.root_url}/_control/requests?method=PUT     # the request log")
        out(f"    curl -X POST {standin.root_url}/_control/reset           # back to the seeded state")
        out(f"    curl {standin.root_url}/_control/                        # everything else")
        out("Ctrl-C stops it.")
