"""`python manage.py verify_audit [--digest FILE]`: prove the audit trail is unaltered.

Walks the whole hash chain in seq order (streamed, constant memory), reports the
first break precisely, checks every ConclusionAttempt against its entries and every
workspace's settings against its last chained settings change, and with --digest proves
the table only grew since that digest was taken. Exits non-zero on any problem, so it
can run from cron or CI.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection, transaction

from experiments import auditverify
from experiments.models import AuditEntry, ConclusionAttempt, SealedPlan, Workspace

CHUNK = 5000
# Mismatching attempts listed before "... and N more".
MAX_LISTED = 20


def _reading() -> contextlib.AbstractContextManager[Any]:
    # PostgreSQL streams .iterator() through a server-side cursor only inside a
    # transaction; SQLite's transactions here are IMMEDIATE (the write lock), so none.
    return transaction.atomic() if connection.vendor == "postgresql" else contextlib.nullcontext()


class Command(BaseCommand):
    help = "Verify the audit trail's hash chain (and optionally a digest); exit 1 on any break."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--digest", metavar="FILE", help="a file written by `audit_digest --output FILE`")

    def handle(self, *args: Any, **options: Any) -> None:
        digest = self._load_digest(options["digest"]) if options["digest"] else None
        with _reading():
            entries = AuditEntry.objects.order_by("seq").values_list(*auditverify.CHAIN_FIELDS, named=True)
            result = auditverify.verify_chain(entries.iterator(chunk_size=CHUNK), digest=digest)
        with _reading():
            mismatches = self._check_projections()
        unchained = self._check_settings()
        plans = self._check_plans()
        problems = []
        if result.first_break:
            problems.append(f"Chain broken at {result.first_break}")
        if result.digest_break:
            problems.append(f"Digest check failed at {result.digest_break}")
        if mismatches:
            problems.append(f"{len(mismatches)} attempt(s) disagree with their audit entries:")
            problems.extend("  " + str(m) for m in mismatches[:MAX_LISTED])
            if len(mismatches) > MAX_LISTED:
                problems.append(f"  ... and {len(mismatches) - MAX_LISTED} more")
        if unchained:
            problems.append(f"{len(unchained)} setting(s) of workspaces disagree with their last chained change:")
            problems.extend("  " + str(m) for m in unchained[:MAX_LISTED])
            if len(unchained) > MAX_LISTED:
                problems.append(f"  ... and {len(unchained) - MAX_LISTED} more")
        if plans:
            problems.append(f"{len(plans)} sealed plan(s) disagree with their chained seal or change:")
            problems.extend("  " + str(m) for m in plans[:MAX_LISTED])
            if len(plans) > MAX_LISTED:
                problems.append(f"  ... and {len(plans) - MAX_LISTED} more")
        if problems:
            raise CommandError("\n".join(problems))
        checked = f"{result.count} entries, head seq {result.head_seq} hash {result.head_hash}"
        grew = f"; grew from the digest's {digest.count} entries" if digest else ""
        self.stdout.write(
            self.style.SUCCESS(
                f"Audit chain OK: {checked}{grew}; every attempt agrees with its entries; "
                "every workspace's settings agree with their last chained change; "
                "every sealed plan agrees with its entries."
            )
        )

    def _load_digest(self, path: str) -> auditverify.Digest:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise CommandError(f"Cannot read the digest file {path}: {exc.strerror or exc}") from None
        try:
            return auditverify.Digest.from_json(text)
        except ValueError as exc:
            raise CommandError(f"{path} is not a usable digest: {exc}.") from None

    def _check_projections(self) -> list[auditverify.ProjectionMismatch]:
        attempts = (
            ConclusionAttempt.objects.order_by("id")
            .values_list(*auditverify.ATTEMPT_FIELDS, named=True)
            .iterator(chunk_size=CHUNK)
        )
        # entry_attempt_seq_idx serves this order.
        entries = (
            AuditEntry.objects.filter(attempt_id__isnull=False)
            .order_by("attempt_id", "seq")
            .values_list(*auditverify.ENTRY_FIELDS, named=True)
            .iterator(chunk_size=CHUNK)
        )
        return list(auditverify.verify_projections(attempts, entries))

    def _check_settings(self) -> list[auditverify.SettingsMismatch]:
        workspaces = Workspace.objects.order_by("id").values_list(*auditverify.WORKSPACE_FIELDS, named=True)
        # Few entries, read in one pass: no index on kind alone (the chain walk reads every entry anyway).
        entries = (
            AuditEntry.objects.filter(kind=auditverify.SETTINGS_ENTRY_KIND, workspace_id__isnull=False)
            .order_by("seq")
            .values_list(*auditverify.SETTINGS_ENTRY_FIELDS, named=True)
        )
        return list(auditverify.verify_workspace_settings(workspaces, entries))

    def _check_plans(self) -> list[auditverify.PlanMismatch]:
        rows = SealedPlan.objects.order_by("id").values_list(*auditverify.PLAN_ROW_FIELDS, named=True)
        # entry_kind_seq_idx serves this read: one range per plan kind.
        entries = (
            AuditEntry.objects.filter(kind__in=auditverify.PLAN_ENTRY_KINDS)
            .order_by("seq")
            .values_list(*auditverify.PLAN_ENTRY_FIELDS, named=True)
        )
        return list(
            auditverify.verify_sealed_plans(rows.iterator(chunk_size=CHUNK), entries.iterator(chunk_size=CHUNK))
        )
