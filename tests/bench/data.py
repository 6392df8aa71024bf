"""Data the benchmarks generate in their throwaway database: people, workspaces, audit rows.

The audit trail is bulk-loaded (bulk_create on SQLite, COPY on PostgreSQL) with a valid hash
chain computed in Python by experiments.auditlog, so what the pages read looks exactly like
what force conclude writes: one ConclusionAttempt per attempt plus its "requested" and outcome
AuditEntry rows, ids and timestamps increasing together.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import random
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.management.color import no_style
from django.db import connection, models, transaction
from django.db.models import Max
from django.utils import timezone

from experiments import audit_payloads, auditlog, auditverify
from experiments.mixpanel.experiment import parse_experiment
from experiments.models import (
    AttemptState,
    AuditEntry,
    ConclusionAttempt,
    EntryKind,
    Membership,
    ReasonCategory,
    Role,
    Workspace,
)
from experiments.services import attempts

# Spacing of generated attempts: a million of them cover about two years, ending before "now",
# so attempts made later through the real service are newer by both id and time.
ATTEMPT_SPACING = dt.timedelta(minutes=1)
BATCH = 5_000
RECONCILE_DELAY = dt.timedelta(minutes=10)
ACTORS = 24

_WORDS = ("checkout", "onboarding", "pricing", "search", "banner", "trial", "paywall", "referral", "upsell")
_WORDS += ("cart", "signup", "dark-mode", "email", "push", "widget", "carousel", "tooltip", "nudge", "coupon")
_CATEGORIES = tuple(ReasonCategory.values)
_REASONS = (
    "Reached significance on the primary metric",
    "Guardrail metric dropped; stopping early",
    "Tracking broke after the release",
    "Business asked to stop before the sale",
    "Ran its planned duration",
)


@dataclass(frozen=True)
class People:
    """Who the benchmarks log in as."""

    pm: Any  # concluder in every bench workspace
    auditor: Any  # may review every workspace's conclusions
    actors: tuple[Any, ...]  # the people who made the generated attempts


def ensure_people(workspaces: Sequence[Workspace]) -> People:
    """Users of the benchmark (idempotent). No passwords: sessions are made directly."""
    user_model = get_user_model()
    pm, _ = user_model.objects.get_or_create(username="bench-pm", defaults={"first_name": "Bench", "last_name": "PM"})
    for workspace in workspaces:
        Membership.objects.get_or_create(user=pm, workspace=workspace, defaults={"role": Role.CONCLUDER})
    auditor, created = user_model.objects.get_or_create(username="bench-auditor", defaults={"first_name": "Audrey"})
    if created:
        auditor.user_permissions.add(Permission.objects.get(codename="review_all_conclusions"))
    actors = []
    for n in range(ACTORS):
        actor, _ = user_model.objects.get_or_create(
            username=f"bench-actor-{n:02d}", defaults={"first_name": f"Actor{n:02d}", "last_name": "Bench"}
        )
        actors.append(actor)
    return People(pm=pm, auditor=auditor, actors=tuple(actors))


def ensure_workspace(*, name: str, mixpanel_workspace_id: int) -> Workspace:
    workspace, _ = Workspace.objects.get_or_create(
        region="us",
        mixpanel_workspace_id=mixpanel_workspace_id,
        defaults={"name": name, "mixpanel_project_id": 7_000 + mixpanel_workspace_id % 1000},
    )
    return workspace


def state_for(index: int) -> str:
    """A fixed mix: ~5% failed, ~1% unknown, a few reconciled, the rest succeeded."""
    if index % 20 == 7:
        return AttemptState.FAILED.value
    if index % 97 == 3:
        return AttemptState.UNKNOWN.value
    if index % 211 == 5:
        return AttemptState.RECONCILED_APPLIED.value
    return AttemptState.SUCCEEDED.value


_OUTCOME_KIND = {
    AttemptState.SUCCEEDED: EntryKind.CONCLUSION_SUCCEEDED,
    AttemptState.FAILED: EntryKind.CONCLUSION_FAILED,
    AttemptState.UNKNOWN: EntryKind.CONCLUSION_UNKNOWN,
    AttemptState.RECONCILED_APPLIED: EntryKind.CONCLUSION_RECONCILED,
}


class AuditGenerator:
    """Grows the audit tables to a number of attempts, keeping one valid hash chain.

    Rows are built as plain tuples and written with executemany (SQLite) or COPY
    (PostgreSQL): model instances and bulk_create cost ~1.5 ms an attempt here, which is
    half an hour for a million.
    """

    def __init__(self, *, workspaces: Sequence[Workspace], actors: Sequence[Any], capacity: int) -> None:
        self.workspaces = [(w.pk, w.mixpanel_workspace_id, w.region) for w in workspaces]
        self.actors = [(a.pk, auditlog.display_name(a)) for a in actors]
        # Attempt number i happens at origin + i * spacing; `capacity` attempts end an hour ago.
        self.origin = timezone.now() - dt.timedelta(hours=1) - capacity * ATTEMPT_SPACING
        self.capacity = capacity
        self.attempts = _Table(ConclusionAttempt, ATTEMPT_COLUMNS)
        self.entries = _Table(AuditEntry, ENTRY_COLUMNS)

    def count(self) -> int:
        return ConclusionAttempt.objects.count()

    def grow_to(self, target: int) -> float:
        """Insert attempts until there are `target`; returns the seconds it took."""
        if target > self.capacity:
            raise ValueError(f"capacity {self.capacity} < target {target}")
        started = time.perf_counter()
        existing = self.count()
        if existing >= target:
            return 0.0
        next_id = (ConclusionAttempt.objects.aggregate(m=Max("id"))["m"] or 0) + 1
        next_entry_id = (AuditEntry.objects.aggregate(m=Max("id"))["m"] or 0) + 1
        head = AuditEntry.objects.order_by("-seq").values_list("seq", "hash").first()
        seq, prev_hash = (head[0], head[1]) if head else (0, auditlog.GENESIS_HASH)
        rnd = random.Random(existing)
        index = existing
        with _big_page_cache():
            self._fill(index, target, next_id, next_entry_id, seq, prev_hash, rnd)
        _reset_sequences()
        with connection.cursor() as cursor:
            # PostgreSQL's autovacuum would analyse tables that grew this much within a minute;
            # do it now so the planner sees the real sizes, as it would in production. SQLite
            # keeps no statistics unless asked (the application never asks), so neither do we.
            if connection.vendor == "postgresql":
                cursor.execute(f"ANALYZE {ConclusionAttempt._meta.db_table}")
                cursor.execute(f"ANALYZE {AuditEntry._meta.db_table}")
            else:
                cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return time.perf_counter() - started

    def _fill(
        self, index: int, target: int, next_id: int, next_entry_id: int, seq: int, prev_hash: str, rnd: random.Random
    ) -> None:
        while index < target:
            size = min(BATCH, target - index)
            attempt_rows: list[tuple[Any, ...]] = []
            entry_rows: list[tuple[Any, ...]] = []
            for _ in range(size):
                attempt = self._attempt(index, next_id, rnd)
                attempt_rows.append(self.attempts.row(attempt))
                for entry in self._entries(attempt, index):
                    seq += 1
                    entry["id"], entry["seq"], entry["prev_hash"] = next_entry_id, seq, prev_hash
                    entry["hash"] = prev_hash = auditlog.entry_hash(
                        seq=seq,
                        kind=entry["kind"],
                        created_at=entry["created_at"],
                        workspace_id=entry["workspace_id"],
                        actor_id=entry["actor_id"],
                        actor_name=entry["actor_name"],
                        attempt_id=entry["attempt_id"],
                        experiment_id=entry["experiment_id"],
                        experiment_name=entry["experiment_name"],
                        payload=entry["payload"],
                        prev_hash=entry["prev_hash"],
                    )
                    entry_rows.append(self.entries.row(entry))
                    next_entry_id += 1
                next_id += 1
                index += 1
            with transaction.atomic():
                self.attempts.insert(attempt_rows)
                self.entries.insert(entry_rows)

    def _attempt(self, index: int, pk: int, rnd: random.Random) -> dict[str, Any]:
        workspace_id, mixpanel_id, region = self.workspaces[index % len(self.workspaces)]
        actor_id, actor_name = self.actors[rnd.randrange(len(self.actors))]
        # Microseconds vary, as real timestamps do.
        created_at = self.origin + index * ATTEMPT_SPACING + dt.timedelta(microseconds=(index * 7919) % 1_000_000)
        state = state_for(index)
        end_date = created_at.replace(microsecond=0)
        end_text = end_date.strftime("%Y-%m-%dT%H:%M:%SZ")
        duration = 80 + rnd.randrange(900)
        failed = state == AttemptState.FAILED
        return {
            "id": pk,
            "workspace_id": workspace_id,
            "mixpanel_id": mixpanel_id,
            "region": region,
            "experiment_id": str(uuid.UUID(int=rnd.getrandbits(128), version=4)),
            "experiment_name": f"{rnd.choice(_WORDS).title()} {rnd.choice(_WORDS)} test {index}",
            "actor_id": actor_id,
            "actor_name": actor_name,
            "reason_category": rnd.choice(_CATEGORIES),
            "reason_text": rnd.choice(_REASONS),
            "end_date": end_date,
            "end_text": end_text,
            "request_body": {"end_date": end_text},
            "created_at": created_at,
            "state": state,
            "failure_reason": "Mixpanel rejected the request (HTTP 400): end_date is before the start"
            if failed
            else "",
            "http_status": 400 if failed else (None if state == AttemptState.UNKNOWN else 200),
            "duration_ms": duration,
            "finished_at": created_at + dt.timedelta(milliseconds=duration),
            # Pressed in a workspace that needs no second person's approval, and never did.
            "expires_at": None,
            "approval_off_since": None,
            "experiment_modified": None,
            "plan_hash": "",
            "approval_rules": [],
            "action": "conclusion",
            "reviewer_name": "",
            "review_note": "",
        }

    def _entries(self, attempt: dict[str, Any], index: int) -> Iterator[dict[str, Any]]:
        common = {
            "workspace_id": attempt["workspace_id"],
            "actor_id": attempt["actor_id"],
            "actor_name": attempt["actor_name"],
            "attempt_id": attempt["id"],
            "experiment_id": attempt["experiment_id"],
            "experiment_name": attempt["experiment_name"],
        }
        # The payloads come from experiments.audit_payloads, as the service writes them.
        row = SimpleNamespace(**attempt)
        requested = audit_payloads.requested(
            SimpleNamespace(**{**attempt, "state": AttemptState.REQUESTED.value}),
            mixpanel_workspace_id=attempt["mixpanel_id"],
            region=attempt["region"],
        )
        yield {
            "kind": EntryKind.CONCLUSION_REQUESTED.value,
            "created_at": attempt["created_at"],
            "payload": auditlog.canonical_json(requested),
            **common,
        }
        state = attempt["state"]
        reconciled = state == AttemptState.RECONCILED_APPLIED
        if reconciled:
            # Left unknown by the request, resolved later by reconcile_conclusions reading it.
            row = SimpleNamespace(
                **{**attempt, "state": AttemptState.UNKNOWN.value, "failure_reason": "Mixpanel did not answer in time."}
            )
        outcome = audit_payloads.outcome(row, claim_released=state == AttemptState.FAILED, sent=True)
        yield {
            "kind": _OUTCOME_KIND[AttemptState.UNKNOWN if reconciled else state].value,
            "created_at": attempt["finished_at"],
            "payload": auditlog.canonical_json(outcome),
            **common,
        }
        if reconciled:
            current = parse_experiment(
                {"id": attempt["experiment_id"], "name": attempt["experiment_name"], "status": "concluded"}
            )
            resolution = audit_payloads.reconciled(
                SimpleNamespace(**attempt),
                previous_state=AttemptState.UNKNOWN.value,
                claim_released=False,
                current=current,
                end_date_matches_request=False,
            )
            yield {
                "kind": EntryKind.CONCLUSION_RECONCILED.value,
                "created_at": attempt["finished_at"] + RECONCILE_DELAY,
                "payload": auditlog.canonical_json(resolution),
                **common,
                "actor_id": None,
                "actor_name": attempts.RECONCILER_NAME,
            }


ATTEMPT_COLUMNS = (
    "id",
    "workspace_id",
    "experiment_id",
    "experiment_name",
    "actor_id",
    "actor_name",
    "reason_category",
    "reason_text",
    "end_date",
    "request_body",
    "created_at",
    "state",
    "failure_reason",
    "http_status",
    "duration_ms",
    "finished_at",
    "expires_at",
    "approval_off_since",
    "experiment_modified",
    "plan_hash",
    "reviewer_name",
    "review_note",
)
# The same columns the chain walk reads, in the same order.
ENTRY_COLUMNS = auditverify.CHAIN_FIELDS


class _Table:
    """Fast inserts into one model's table, given values by attribute name.

    Columns the generator does not know (say a field added by a later migration) get the
    field's default, so the benchmark keeps working as the models grow.
    """

    def __init__(self, model: type[models.Model], columns: Sequence[str]) -> None:
        fields = {f.attname: f for f in model._meta.concrete_fields}
        unknown = set(columns) - set(fields)
        if unknown:
            raise RuntimeError(f"{model.__name__} has no field(s) {sorted(unknown)}: update tests/bench/data.py")
        self.columns = tuple(columns)
        self.fields = [fields[name] for name in columns]
        extra = [f for name, f in fields.items() if name not in columns]
        for field in extra:
            if not field.null and not field.has_default() and not field.has_db_default():
                raise RuntimeError(f"{model.__name__}.{field.name} needs a value: update tests/bench/data.py")
        self.extra_columns = tuple(f.column for f in extra)
        self.extra_values = tuple(f.get_db_prep_save(f.get_default(), connection) for f in extra)
        self.table = model._meta.db_table
        self.postgres = connection.vendor == "postgresql"
        # Per column: how a Python value becomes what the database driver is given.
        self.adapters = [self._adapter(f) for f in self.fields]

    def _adapter(self, field: models.Field) -> Any:
        if isinstance(field, models.JSONField):
            return lambda value: json.dumps(value, separators=(",", ":"))
        if isinstance(field, models.DateTimeField) and not self.postgres:
            # Django's SQLite form: naive UTC text (see DatabaseOperations.adapt_datetimefield_value).
            return lambda value: None if value is None else str(value.astimezone(dt.UTC).replace(tzinfo=None))
        return None

    def row(self, values: dict[str, Any]) -> tuple[Any, ...]:
        out = [values[name] for name in self.columns]
        for i, adapt in enumerate(self.adapters):
            if adapt is not None:
                out[i] = adapt(out[i])
        return (*out, *self.extra_values)

    def insert(self, rows: list[tuple[Any, ...]]) -> None:
        if not rows:
            return
        columns = [f.column for f in self.fields] + list(self.extra_columns)
        quoted = ", ".join(connection.ops.quote_name(c) for c in columns)
        table = connection.ops.quote_name(self.table)
        with connection.cursor() as cursor:
            if self.postgres:
                # The psycopg cursor under Django's wrapper: COPY is an order of magnitude faster.
                with cursor.cursor.copy(f"COPY {table} ({quoted}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
            else:
                marks = ", ".join(["%s"] * len(columns))
                sql = f"INSERT INTO {table} ({quoted}) VALUES ({marks})"  # noqa: S608 - names from the model
                cursor.executemany(sql, rows)


@contextlib.contextmanager
def _big_page_cache() -> Iterator[None]:
    """SQLite: a 256 MB page cache while bulk loading (random keys of the unique hash indexes
    thrash the default 2 MB), then back to the default. PostgreSQL: nothing to do."""
    if connection.vendor != "sqlite":
        yield
        return
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA cache_size")
        previous = cursor.fetchone()[0]
        cursor.execute("PRAGMA cache_size = -262144")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"PRAGMA cache_size = {int(previous)}")


def _reset_sequences() -> None:
    # Rows were inserted with explicit ids: move PostgreSQL's sequences past them so the
    # real service's inserts (B3) do not collide. SQLite needs nothing.
    statements = connection.ops.sequence_reset_sql(no_style(), [ConclusionAttempt, AuditEntry])
    if statements:
        with connection.cursor() as cursor:
            for sql in statements:
                cursor.execute(sql)
