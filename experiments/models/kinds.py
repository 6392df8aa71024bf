"""The kinds of audit entry, and the groups of them that pages, exports and checks read."""

from __future__ import annotations

from django.db import models


class EntryKind(models.TextChoices):
    CONCLUSION_REQUESTED = "conclusion_requested", "Force conclude requested"
    CONCLUSION_SUCCEEDED = "conclusion_succeeded", "Force conclude succeeded"
    CONCLUSION_FAILED = "conclusion_failed", "Force conclude failed"
    CONCLUSION_UNKNOWN = "conclusion_unknown", "Force conclude outcome unknown"
    CONCLUSION_RECONCILED = "conclusion_reconciled", "Force conclude reconciled"
    # An outcome that came back after the attempt was already resolved: evidence only.
    CONCLUSION_LATE_ANSWER = "conclusion_late_answer", "Late answer after reconciling"
    DECISION_REQUESTED = "decision_requested", "Decision requested"
    DECISION_SUCCEEDED = "decision_succeeded", "Decision succeeded"
    DECISION_FAILED = "decision_failed", "Decision failed"
    DECISION_UNKNOWN = "decision_unknown", "Decision outcome unknown"
    DECISION_RECONCILED = "decision_reconciled", "Decision reconciled"
    DECISION_LATE_ANSWER = "decision_late_answer", "Late decision answer after reconciling"
    APPROVAL_REQUESTED = "approval_requested", "Approval requested"
    APPROVAL_APPROVED = "approval_approved", "Request approved"
    APPROVAL_REJECTED = "approval_rejected", "Request rejected"
    APPROVAL_EXPIRED = "approval_expired", "Request expired"
    # The requester closed their own request: no one reviewed it.
    APPROVAL_WITHDRAWN = "approval_withdrawn", "Request withdrawn"
    # An approval found the experiment changed in Mixpanel since the request: closed unsent.
    APPROVAL_STALE = "approval_stale", "Request stale: changed since asked"
    BOOKMARK_ADDED = "bookmark_added", "Bookmark added"
    BOOKMARK_REMOVED = "bookmark_removed", "Bookmark removed"
    # A workspace admin changed where the team hears about outcomes, or two-person approval.
    SETTINGS_CHANGED = "settings_changed", "Workspace settings changed"
    # Someone's role (or a group rule's) was granted, changed or removed: by an admin in the
    # admin site, a command, or sign-in bringing roles in line with identity-provider groups.
    ROLE_CHANGED = "role_changed", "Role changed"
    # A personal API token was made or revoked (never its secret: its name, scope and expiry).
    TOKEN_CREATED = "token_created", "API token created"
    TOKEN_REVOKED = "token_revoked", "API token revoked"
    # A workspace admin sent a test message through the workspace's notification channels.
    NOTIFICATION_TEST = "notification_test", "Test message"
    # The dashboard saw an experiment enter a state that owes a decision (models.owed.OwedReason).
    EXPERIMENT_OWED = "experiment_owed", "Decision owed"
    # The weekly digest of what a workspace owes, told to its webhook.
    OWED_DIGEST = "owed_digest", "Weekly digest"
    # An experiment's plan, sealed the first time it is seen active, and each change found later.
    PLAN_SEALED = "plan_sealed", "Plan sealed"
    PLAN_CHANGED = "plan_changed", "Plan changed"
    # A Force conclude scheduled for later: set, cancelled (by a person or a lost role), run.
    SCHEDULE_SET = "schedule_set", "Force conclude scheduled"
    SCHEDULE_CANCELLED = "schedule_cancelled", "Scheduled force conclude cancelled"
    SCHEDULE_FIRED = "schedule_fired", "Scheduled force conclude ran"
    # The press a schedule made was refused before any attempt was recorded (Mixpanel could
    # not be read for the request, say): nothing was sent, and this says why.
    SCHEDULE_REFUSED = "schedule_refused", "Scheduled force conclude refused"


# How an attempt ended (conclusions and decisions alike), and the steps of an approval.
OUTCOME_KINDS = frozenset(
    {
        EntryKind.CONCLUSION_SUCCEEDED,
        EntryKind.CONCLUSION_FAILED,
        EntryKind.CONCLUSION_UNKNOWN,
        EntryKind.CONCLUSION_RECONCILED,
        EntryKind.DECISION_SUCCEEDED,
        EntryKind.DECISION_FAILED,
        EntryKind.DECISION_UNKNOWN,
        EntryKind.DECISION_RECONCILED,
    }
)
# The entries about the controls rather than an attempt: who changed a workspace's safeguards
# and notifications. The audit list shows them as their own view, with their own filter, and
# both exports carry them; a new kind of such entry joins by being added here.
GOVERNANCE_KINDS = frozenset(
    {EntryKind.SETTINGS_CHANGED, EntryKind.ROLE_CHANGED, EntryKind.TOKEN_CREATED, EntryKind.TOKEN_REVOKED}
)
APPROVAL_KINDS = frozenset(
    {
        EntryKind.APPROVAL_REQUESTED,
        EntryKind.APPROVAL_APPROVED,
        EntryKind.APPROVAL_REJECTED,
        EntryKind.APPROVAL_EXPIRED,
        EntryKind.APPROVAL_WITHDRAWN,
        EntryKind.APPROVAL_STALE,
    }
)
# The entries about an experiment's plan and its schedules: not attempt entries. The audit
# list shows them beside decisions owed, and both exports carry them.
PLAN_KINDS = frozenset({EntryKind.PLAN_SEALED, EntryKind.PLAN_CHANGED})
SCHEDULE_KINDS = frozenset(
    {EntryKind.SCHEDULE_SET, EntryKind.SCHEDULE_CANCELLED, EntryKind.SCHEDULE_FIRED, EntryKind.SCHEDULE_REFUSED}
)
