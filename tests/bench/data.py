"""Data the benchmarks generate in their throwaway database: people, workspaces, audit rows.

The audit trail is bulk-loaded (bulk_create on SQLite, COPY on PostgreSQL) with a valid hash
chain computed in Python by experiments.auditlog, so what the pages read looks exactly like
what force conclude writes: one ConclusionAttempt per attempt plus its "requested" and outcome
AuditEntry rows, ids and timestamps increasing together.
"""

from __future__ import annotations

import datetime as dt
import random
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.management.color import no_style
from django.db import connection, models, transaction
from django.db.models import Max
from django.utils import timezone

from experiments import auditlog
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

# Spacing of generated attempts: a million of them cover about two years, ending before "now",
# so attempts made later through the real service are newer by both id and time.
ATTEMPT_SPACING = dt.timedelta(minutes=1)
BATCH = 5_000
ACTORS = 24

_WORDS = ("checkout", "onboarding", "pricing", "search", "banner", "trial", "paywall", "referral", "upsell")
_WORDS += ("cart", "signup", "dark-mode", "email", "push", "widget", "carousel", "tooltip", "nudge", "coupon")
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
        return AttemptState.FAILED
    if index % 97 == 3:
        return AttemptState.UNKNOWN
    if index % 211 == 5:
        return AttemptState.RECONCILED_APPLIED
    return AttemptState.SUCCEEDED


_OUTCOME_KIND = {
    AttemptState.SUCCEEDED: EntryKind.CONCLUSION_SUCCEEDED,
    AttemptState.FAILED: EntryKind.CONCLUSION_FAILED,
    AttemptState.UNKNOWN: EntryKind.CONCLUSION_UNKNOWN,
    AttemptState.RECONCILED_APPLIED: EntryKind.CONCLUSION_RECONCILED,
}


class AuditGenerator:
    """Grows the audit tables to a number of attempts, keeping one valid hash chain."""

    def __init__(self, *, workspaces: Sequence[Workspace], actors: Sequence[Any], capacity: int) -> None:
        self.workspaces = list(workspaces)
        self.actors = list(actors)
        # Attempt number i happens at origin + i * spacing; `capacity` attempts end an hour ago.
        self.origin = timezone.now() - dt.timedelta(hours=1) - capacity * ATTEMPT_SPACING
        self.capacity = capacity

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
        index = existing
        while index < target:
            size = min(BATCH, target - index)
            attempts: list[ConclusionAttempt] = []
            entries: list[AuditEntry] = []
            for offset in range(size):
                attempt = self._attempt(index + offset, next_id)
                attempts.append(attempt)
                for entry in self._entries(attempt, index + offset):
                    seq += 1
                    entry.id = next_entry_id
                    entry.seq = seq
                    entry.prev_hash = prev_hash
                    entry.hash = auditlog.hash_of(entry)
                    prev_hash = entry.hash
                    next_entry_id += 1
                    entries.append(entry)
                next_id += 1
            with transaction.atomic():
                insert(ConclusionAttempt, attempts)
                insert(AuditEntry, entries)
            index += size
        _reset_sequences()
        if connection.vendor == "postgresql":
            # Autovacuum would analyse a table that grew this much within a minute; do it now
            # so the planner sees the real sizes, as it would in production.
            with connection.cursor() as cursor:
                cursor.execute(f"ANALYZE {ConclusionAttempt._meta.db_table}")
                cursor.execute(f"ANALYZE {AuditEntry._meta.db_table}")
        return time.perf_counter() - started

    def _attempt(self, index: int, pk: int) -> ConclusionAttempt:
        rnd = random.Random(index)
        workspace = self.workspaces[index % len(self.workspaces)]
        actor = self.actors[rnd.randrange(len(self.actors))]
        created_at = self.origin + index * ATTEMPT_SPACING
        state = state_for(index)
        end_date = created_at.replace(microsecond=0)
        name = f"{rnd.choice(_WORDS).title()} {rnd.choice(_WORDS)} test {index}"
        duration = 80 + rnd.randrange(900)
        return ConclusionAttempt(
            id=pk,
            workspace=workspace,
            experiment_id=str(uuid.UUID(int=rnd.getrandbits(128), version=4)),
            experiment_name=name,
            actor=actor,
            actor_name=auditlog.display_name(actor),
            reason_category=rnd.choice(ReasonCategory.values),
            reason_text=rnd.choice(_REASONS),
            end_date=end_date,
            request_body={"end_date": end_date.strftime("%Y-%m-%dT%H:%M:%SZ")},
            created_at=created_at,
            state=state,
            failure_reason=(
                "Mixpanel rejected the request (HTTP 400): end_date is before the start" if state == "failed" else ""
            ),
            http_status=400 if state == AttemptState.FAILED else (None if state == AttemptState.UNKNOWN else 200),
            duration_ms=duration,
            finished_at=created_at + dt.timedelta(milliseconds=duration),
        )

    def _entries(self, attempt: ConclusionAttempt, index: int) -> Iterator[AuditEntry]:
        common = {
            "workspace_id": attempt.workspace_id,
            "actor_id": attempt.actor_id,
            "actor_name": attempt.actor_name,
            "attempt_id": attempt.id,
            "experiment_id": attempt.experiment_id,
            "experiment_name": attempt.experiment_name,
        }
        yield AuditEntry(
            kind=EntryKind.CONCLUSION_REQUESTED,
            created_at=attempt.created_at,
            payload=auditlog.canonical_json(
                {
                    "requested_by": attempt.actor_name,
                    "reason_category": attempt.reason_category,
                    "reason_text": attempt.reason_text,
                    "end_date": attempt.end_date,
                    "request_body": attempt.request_body,
                    "mixpanel_workspace_id": attempt.workspace.mixpanel_workspace_id,
                    "region": attempt.workspace.region,
                }
            ),
            **common,
        )
        summary = {"id": attempt.experiment_id, "name": attempt.experiment_name, "variants": 2, "exposures": index}
        outcome: dict[str, Any] = {
            "state": attempt.state,
            "claim_released": attempt.state == AttemptState.FAILED,
            "http_status": attempt.http_status,
            "duration_ms": attempt.duration_ms,
            "sent": True,
            "before_summary": {**summary, "status": "active"},
        }
        if attempt.state == AttemptState.FAILED:
            outcome["reason"] = attempt.failure_reason
        else:
            outcome["after_summary"] = {**summary, "status": "concluded"}
            outcome["status_before"], outcome["status_after"] = "active", "concluded"
        yield AuditEntry(
            kind=_OUTCOME_KIND[attempt.state],
            created_at=attempt.finished_at,
            payload=auditlog.canonical_json(outcome),
            **common,
        )


def insert(model: type[models.Model], objects: list[Any]) -> None:
    """Insert many rows fast: COPY on PostgreSQL, batched INSERTs elsewhere."""
    if not objects:
        return
    if connection.vendor != "postgresql":
        model.objects.bulk_create(objects, batch_size=1_000)
        return
    fields = model._meta.concrete_fields
    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    table = connection.ops.quote_name(model._meta.db_table)
    # The psycopg cursor under Django's wrapper: its COPY is an order of magnitude faster.
    with connection.cursor() as cursor, cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
        for obj in objects:
            copy.write_row([f.get_db_prep_save(getattr(obj, f.attname), connection) for f in fields])


def _reset_sequences() -> None:
    # Rows were inserted with explicit ids: move PostgreSQL's sequences past them so the
    # real service's inserts (B3) do not collide. SQLite needs nothing.
    statements = connection.ops.sequence_reset_sql(no_style(), [ConclusionAttempt, AuditEntry])
    if statements:
        with connection.cursor() as cursor:
            for sql in statements:
                cursor.execute(sql)
