"""Reconciling open attempts, conclusions and decisions alike, by reading Mixpanel only.

An attempt left "requested" (the process died between intent and outcome) or
"unknown" (sent, no trustworthy answer) is resolved by READING the experiment; the
request is never sent again. Each resolution is a new audit entry saying why. The
reconcile_conclusions command and the background task both call conclusion_reconcile.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.utils import timezone

from experiments import audit_payloads
from experiments.mixpanel import client as mixpanel
from experiments.mixpanel.errors import MixpanelError
from experiments.mixpanel.experiment import CONCLUDED_STATUSES, DECIDED_STATUSES
from experiments.models import AttemptAction, AttemptState, ConclusionAttempt
from experiments.services import attempts

# A module import, not names: conclusions -> attempts -> tasks -> here runs while
# conclusions is still loading.
from experiments.services import conclusions as conclusion_services

# Beyond the client's deadlines, the time an attempt's own transactions take and the
# clock difference between the server that pressed and the one that reconciles.
IN_FLIGHT_MARGIN = dt.timedelta(seconds=30)

RECONCILABLE_STATES = (AttemptState.REQUESTED, AttemptState.UNKNOWN)
# Per action, the statuses that say its request landed, and those that say it did not:
# a conclusion did not land while the experiment still runs (or never started); a
# decision did not land while the experiment is still only concluded.
NOT_CONCLUDED_STATUSES = frozenset({"active", "draft"})
LANDED_STATUSES = {
    AttemptAction.CONCLUSION: (CONCLUDED_STATUSES, NOT_CONCLUDED_STATUSES),
    AttemptAction.DECISION: (DECIDED_STATUSES, frozenset({"concluded"})),
}
ACTION_NOUNS = {AttemptAction.CONCLUSION: "force conclude", AttemptAction.DECISION: "decision"}

MSG_RECONCILED_APPLIED = "Mixpanel shows {name} as {status}: the {action} was applied."
MSG_RECONCILED_NOT_APPLIED = (
    "Mixpanel shows {name} as still {status}: the {action} was not applied. "
    "Nothing was changed, so it may be tried again."
)
MSG_RECONCILE_READ_FAILED = "Could not read {name} from Mixpanel ({error}); left open, run again later."
MSG_RECONCILE_ODD = "Mixpanel shows {name} with status {status!r}; left open for a person to check."
MSG_RECONCILE_WRONG = "Mixpanel answered for a different experiment than {name}; left open for a person to check."
MSG_RECONCILE_DONE = "Already resolved ({state}); nothing to do."
MSG_RECONCILE_TOO_EARLY = "Its request may still be in flight until {when}; left open until then."


def in_flight_limit() -> dt.timedelta:
    """The longest an attempt's requests can still be on their way after it was recorded:
    the read's deadline, then the PUT's, plus a margin."""
    seconds = mixpanel.read_deadline_seconds() + mixpanel.write_deadline_seconds()
    return dt.timedelta(seconds=seconds) + IN_FLIGHT_MARGIN


def attempt_judgeable_at(attempt: ConclusionAttempt) -> dt.datetime:
    """When reconciling may first judge `attempt`: once no PUT of it can still be in flight.

    Reading the experiment earlier could see it "active" while our own PUT is
    about to land, and release the claim for a second PUT. An approved request's PUT
    follows its approval, not its asking.
    """
    return (attempt.reviewed_at or attempt.created_at) + in_flight_limit()


@dataclass(frozen=True)
class ReconcileResult:
    """What reconciling one attempt did. `outcome` is "applied", "not_applied",
    "unresolved" (left open, see message), "too_early" (its PUT may still be in
    flight) or "skipped" (already resolved)."""

    attempt: ConclusionAttempt
    outcome: str
    previous_state: str
    upstream_status: str | None
    message: str

    @property
    def resolved(self) -> bool:
        return self.outcome in ("applied", "not_applied", "skipped")


def conclusion_reconcile(*, attempt: ConclusionAttempt, client: mixpanel.MixpanelClient) -> ReconcileResult:
    """Resolve one "requested" or "unknown" attempt (a conclusion or a decision) by reading its experiment.

    A decision counts as applied when Mixpanel shows success or fail, and as not
    applied while the experiment is still only concluded; otherwise as below.

    Concluded, success or fail upstream: "reconciled: applied", the claim stays.
    Still active or draft: "reconciled: not applied", the claim is released. A read
    failure or an unexpected status leaves the attempt open, and so does an attempt
    younger than attempt_judgeable_at, whatever the caller asked. Never sends the PUT.
    """
    name = conclusion_services.quoted_name(attempt.experiment_name, attempt.experiment_id)
    previous = attempt.state
    if previous not in RECONCILABLE_STATES:
        return ReconcileResult(attempt, "skipped", previous, None, MSG_RECONCILE_DONE.format(state=previous))
    judgeable_at = attempt_judgeable_at(attempt)
    if timezone.now() < judgeable_at:
        message = MSG_RECONCILE_TOO_EARLY.format(when=judgeable_at.astimezone(dt.UTC).isoformat(timespec="seconds"))
        return ReconcileResult(attempt, "too_early", previous, None, message)
    try:
        current = client.get_experiment(attempt.workspace.mixpanel_workspace_id, attempt.experiment_id)
    except Exception as exc:
        if not isinstance(exc, MixpanelError):
            conclusion_services.log_unexpected(exc, attempt=attempt, step="reconcile read")
        message = MSG_RECONCILE_READ_FAILED.format(name=name, error=audit_payloads.error_data(exc)["message"])
        return ReconcileResult(attempt, "unresolved", previous, None, message)
    if current.id != attempt.experiment_id:
        return ReconcileResult(attempt, "unresolved", previous, current.status, MSG_RECONCILE_WRONG.format(name=name))
    landed, not_landed = LANDED_STATUSES[attempt.action]
    if current.status in landed:
        outcome, state, message = "applied", AttemptState.RECONCILED_APPLIED, MSG_RECONCILED_APPLIED
    elif current.status in not_landed:
        outcome, state, message = "not_applied", AttemptState.RECONCILED_NOT_APPLIED, MSG_RECONCILED_NOT_APPLIED
    else:
        message = MSG_RECONCILE_ODD.format(name=name, status=current.status)
        return ReconcileResult(attempt, "unresolved", previous, current.status, message)
    message = message.format(name=name, status=current.status, action=ACTION_NOUNS[attempt.action])
    if not attempts.attempt_record_reconciled(attempt=attempt, state=state, message=message, current=current):
        done = MSG_RECONCILE_DONE.format(state=attempt.state)
        return ReconcileResult(attempt, "skipped", previous, current.status, done)
    if outcome == "applied":
        conclusion_services.invalidate_list(attempt.workspace)
    return ReconcileResult(attempt, outcome, previous, current.status, message)
