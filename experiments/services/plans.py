"""Sealing an experiment's plan the first time the dashboard sees it active, and recording
every change a later read finds.

Called wherever the whole experiment is read (the experiment page, a press that asks for
approval, an approval): the list's copy carries no settings, so it cannot seal. The seal
is written once per experiment however many processes read it at once: the SealedPlan
row's unique insert is the lock, and its plan_sealed entry commits in the same
transaction. A change is a compare-and-set on the stored hash, with its plan_changed entry.
"""

from __future__ import annotations

import datetime as dt
import json
import logging

from django.db import DatabaseError, IntegrityError, transaction
from django.utils import timezone

from experiments import audit_payloads, auditlog
from experiments.mixpanel.experiment import Experiment
from experiments.mixpanel.plan import Plan, experiment_plan, plan_changes
from experiments.models import EntryKind, SealedPlan, Workspace

logger = logging.getLogger(__name__)

# Who writes seals in the audit trail: the dashboard, not the person whose read found it.
SEAL_NAME = "Experiment Desk"
# Seen active more than this long after its start, a plan is sealed "as first seen": the
# seal cannot vouch that nobody changed it before.
FIRST_SEEN_AFTER = dt.timedelta(days=1)


def plan_observe(*, workspace: Workspace, experiment: Experiment) -> SealedPlan | None:
    """Seal the plan of an active experiment not sealed yet, or record that a sealed plan
    changed; return the seal as it now stands (None while unsealed). Never raises for a
    database hiccup: a seal missed now is written by the next read."""
    plan = experiment_plan(experiment)
    try:
        sealed = SealedPlan.objects.filter(workspace=workspace, experiment_id=experiment.id).first()
        if sealed is None:
            if not experiment.is_active or experiment.deleted is not None:
                return None
            return _seal(workspace, experiment, plan)
        if sealed.plan_hash != plan.hash:
            _record_change(sealed, experiment, plan)
        return sealed
    except DatabaseError:
        logger.exception("Could not seal or check the plan of experiment %s", experiment.id)
        return None


def _seal(workspace: Workspace, experiment: Experiment, plan: Plan) -> SealedPlan:
    now = timezone.now()
    start = experiment.start_date
    max_name = SealedPlan._meta.get_field("experiment_name").max_length
    sealed = SealedPlan(
        workspace=workspace,
        experiment_id=experiment.id,
        experiment_name=experiment.name[:max_name],
        plan=plan.text,
        plan_hash=plan.hash,
        modified=plan.modified,
        sealed_at=now,
        # No start date: nothing says the plan was fixed when it began.
        as_first_seen=start is None or now - start > FIRST_SEEN_AFTER,
    )
    try:
        with transaction.atomic():
            sealed.seal_entry = auditlog.append_entry(
                kind=EntryKind.PLAN_SEALED,
                workspace=workspace,
                actor_name=SEAL_NAME,
                experiment_id=experiment.id,
                experiment_name=sealed.experiment_name,
                payload=audit_payloads.plan_sealed(sealed, start_date=start),
            )
            sealed.save(force_insert=True)
    except IntegrityError:
        # Another process sealed it first; its seal (and entry) stand, ours rolled back.
        return SealedPlan.objects.get(workspace=workspace, experiment_id=experiment.id)
    return sealed


def _record_change(sealed: SealedPlan, experiment: Experiment, plan: Plan) -> bool:
    """Move the seal to the new plan and append plan_changed, once per change: True when this call did."""
    previous_hash = sealed.plan_hash
    changes = plan_changes(json.loads(sealed.plan), plan.data)
    changes.append(
        {
            "field": "modified",
            "before": audit_payloads.as_json(sealed.modified),
            "after": audit_payloads.as_json(plan.modified),
        }
    )
    now = timezone.now()
    moved = {"plan": plan.text, "plan_hash": plan.hash, "modified": plan.modified, "changed_at": now}
    with transaction.atomic():
        if not SealedPlan.objects.filter(pk=sealed.pk, plan_hash=previous_hash).update(**moved):
            sealed.refresh_from_db()
            return False
        for name, value in moved.items():
            setattr(sealed, name, value)
        auditlog.append_entry(
            kind=EntryKind.PLAN_CHANGED,
            workspace=sealed.workspace,
            actor_name=SEAL_NAME,
            experiment_id=sealed.experiment_id,
            experiment_name=sealed.experiment_name,
            payload=audit_payloads.plan_changed(sealed, previous_hash=previous_hash, changes=changes),
        )
    return True
