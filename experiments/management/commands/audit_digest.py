"""`python manage.py audit_digest [--output FILE]`: the audit chain's head, to keep elsewhere.

Prints {"count", "head_seq", "head_hash", "created_at"} as JSON. Kept outside the
database (a file, a ticket, another system), it lets `verify_audit --digest FILE`
later prove the table only grew: nothing cut from the end, nothing rewritten.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from experiments import auditverify


class Command(BaseCommand):
    help = "Print the audit chain's current head hash and count (and optionally write them to a file)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--output", metavar="FILE", help="also write the digest to FILE (replacing it)")

    def handle(self, *args: Any, **options: Any) -> None:
        text = json.dumps(auditverify.current_digest().as_dict(), sort_keys=True)
        if options["output"]:
            try:
                Path(options["output"]).write_text(text + "\n", encoding="utf-8")
            except OSError as exc:
                raise CommandError(f"Cannot write {options['output']}: {exc.strerror or exc}") from None
        self.stdout.write(text)
