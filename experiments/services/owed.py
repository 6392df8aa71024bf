"""Reminders about decisions owed: told once per state of an experiment, however many workers look.

`owed_reminders_send` runs in the worker after it reads a workspace's list again
(services.list_refresh). For each experiment that entered an owed state (selectors.owed)
whose kind the workspace reminds about, one transaction appends an `experiment_owed` entry
to the audit chain (by the dashboard itself), inserts the OwedReminder row that claims
(workspace, experiment, state), and hands the entry to notifications.entry_recorded, which
queues the webhook message and the e-mails. Two workers that see the same change race on the
row's unique constraint: the loser's transaction rolls back whole, entry included, so the
chain and the channels hear of it once.
"""

from __future__ import annotations

import datetime as dt
import logging

from django.db import IntegrityError, transaction
from django.utils import timezone

from experiments import auditlog, dates
from experiments.models import EntryKind, OwedReason, OwedReminder, Workspace
from experiments.notifications import deliveries as notifications
from experiments.selectors import owed as owed_selectors
from experiments.selectors.experiment_list import ExperimentListSnapshot

logger = logging.getLogger(__name__)

# Who the chain names for what the dashboard noticed on its own.
SYSTEM_NAME = "Experiment Desk"
# New reminders one workspace sends per refresh at most, the longest owed first: a workspace
# that turns reminders on with a hundred overdue experiments hears of them over a few
# refreshes instead of in one burst (the digest and the home page list them all meanwhile).
REMINDERS_PER_RUN = 20
# The workspace's switch for each kind of reminder.
REMINDER_SWITCHES = {
    OwedReason.DUE: "remind_due",
    OwedReason.OVERDUE: "remind_overdue",
    OwedReason.UNDECIDED: "remind_undecided",
    OwedReason.NO_DATA: "remind_no_data",
}


def owed_reminders_send(
    *, workspace: Workspace, snapshot: ExperimentListSnapshot, now: dt.datetime | None = None
) -> int:
    """Tell the workspace's channels about experiments that entered an owed state; returns how
    many reminders this call recorded (0 for those another worker recorded first).

    Nothing is recorded while the workspace has neither a webhook nor e-mail on, or for a
    kind it turned off: turning one on later tells of the states then current.
    """
    if not (workspace.webhook_url_sealed or workspace.email_bookmarkers):
        return 0
    kinds = {reason for reason, switch in REMINDER_SWITCHES.items() if getattr(workspace, switch)}
    owed = [
        o for o in owed_selectors.owed_in_snapshot(workspace=workspace, snapshot=snapshot, now=now) if o.reason in kinds
    ]
    if not owed:
        return 0
    told = set(OwedReminder.objects.filter(workspace=workspace).values_list("experiment_id", "reason"))
    fresh = [o for o in owed if (o.experiment.id, o.reason) not in told]
    return sum(1 for o in fresh[:REMINDERS_PER_RUN] if _remind(workspace, o))


def _remind(workspace: Workspace, owed: owed_selectors.OwedExperiment) -> bool:
    experiment = owed.experiment
    payload = {
        "reason": owed.reason,
        "since": dates.format_utc(owed.since),
        "status": experiment.status,
        "owner": owed.owner,
        "owner_email": experiment.creator_email or "",
        "started": dates.format_utc(experiment.start_date) if experiment.start_date else "",
        "planned_end": dates.format_utc(experiment.planned_end) if experiment.planned_end else "",
        "ended": dates.format_utc(experiment.end_date) if experiment.end_date else "",
    }
    try:
        with transaction.atomic():
            entry = auditlog.append_entry(
                kind=EntryKind.EXPERIMENT_OWED,
                workspace=workspace,
                actor_name=SYSTEM_NAME,
                experiment_id=experiment.id,
                experiment_name=experiment.name[:500],
                payload=payload,
            )
            OwedReminder.objects.create(
                workspace=workspace,
                experiment_id=experiment.id,
                reason=owed.reason,
                since=owed.since,
                entry=entry,
                created_at=timezone.now(),
            )
            notifications.entry_recorded(entry=entry)
    except IntegrityError:
        # Another worker recorded this state first; its reminder is the one.
        return False
    logger.info(
        "Decision owed in %s (#%s): %s is %s since %s.",
        workspace.name,
        workspace.pk,
        experiment.id,
        owed.reason,
        payload["since"],
    )
    return True
