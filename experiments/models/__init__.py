"""Data model of Experiment Desk.

Experiments themselves live in Mixpanel and are never stored here. What we keep:
who may see which workspace, the append-only audit trail, the small mutable
claim that makes a force conclude happen once, and team bookmarks.
"""

from __future__ import annotations

import json

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

from experiments.models.kinds import (
    APPROVAL_KINDS,
    GOVERNANCE_KINDS,
    OUTCOME_KINDS,
    PLAN_KINDS,
    SCHEDULE_KINDS,
    EntryKind,
)
from experiments.models.roles import CONCLUDING_ROLES, Region, Role

# How long a request for approval may wait: an hour to a week (the database refuses others).
APPROVAL_WINDOW_MIN_HOURS = 1
APPROVAL_WINDOW_MAX_HOURS = 168


class ApprovalWhen(models.TextChoices):
    """When two-person approval applies, in a workspace that has it on."""

    ALWAYS = "always", "Always"
    RISKY = "risky", "When risky"


class ApprovalPolicy(models.TextChoices):
    """A workspace's approval policy as its admins choose it: `requires_approval` and
    `approval_when` together (Workspace.approval_policy)."""

    NEVER = "never", "Never"
    RISKY = "risky", "When risky"
    ALWAYS = "always", "Always"


def approval_policy_of(*, requires_approval: bool, approval_when: str) -> str:
    """The approval policy (an ApprovalPolicy value) that approval's switch and its scope make."""
    if not requires_approval:
        return ApprovalPolicy.NEVER
    return ApprovalPolicy.RISKY if approval_when == ApprovalWhen.RISKY else ApprovalPolicy.ALWAYS


class Workspace(models.Model):
    name = models.CharField(max_length=200)
    region = models.CharField(max_length=2, choices=Region.choices, default=Region.US)
    mixpanel_workspace_id = models.PositiveBigIntegerField("Mixpanel workspace id")
    mixpanel_project_id = models.PositiveBigIntegerField("Mixpanel project id", null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    # Two-person approval: when on, a concluder's press becomes a request that another
    # concluder or admin approves (which sends the call) or rejects within the window.
    requires_approval = models.BooleanField(
        "requires two-person approval",
        default=False,
        help_text="A press of Force conclude becomes a request a second concluder or admin must approve.",
    )
    approval_window_hours = models.PositiveSmallIntegerField(
        default=24,
        validators=[MinValueValidator(APPROVAL_WINDOW_MIN_HOURS), MaxValueValidator(APPROVAL_WINDOW_MAX_HOURS)],
        help_text="How long a request waits for approval before it expires (1 to 168 hours).",
    )
    # When approval turns off: ahead while its switch-off waits out the delay, past once off; else None.
    approval_off_at = models.DateTimeField(null=True, blank=True, editable=False)
    # Which presses approval applies to while it is on: every one, or only the risky ones
    # (selectors.approval_risk says which). Kept apart from `requires_approval` so that
    # turning approval off keeps its delay whatever this says.
    approval_when = models.CharField(
        "two-person approval applies",
        max_length=10,
        choices=ApprovalWhen.choices,
        default=ApprovalWhen.ALWAYS,
        help_text="Always, or only when a conclusion or decision is risky (while approval is on).",
    )
    # Notifications. The webhook URL is a secret, stored only sealed (notifications.webhook) and as a hint.
    webhook_url_sealed = models.TextField(blank=True)
    webhook_url_hint = models.CharField(max_length=80, blank=True)
    email_bookmarkers = models.BooleanField("email the people who bookmarked the experiment", default=False)
    # Reminders about decisions owed (selectors.owed), each kind on or off for the workspace.
    remind_due = models.BooleanField("remind when the planned length is reached", default=True)
    remind_overdue = models.BooleanField("remind when overdue", default=True)
    remind_undecided = models.BooleanField("remind when concluded and not decided", default=True)
    remind_no_data = models.BooleanField("remind when there is no data", default=True)
    REMINDER_FIELDS = ("remind_due", "remind_overdue", "remind_undecided", "remind_no_data")

    class Meta:
        ordering = ["name", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["region", "mixpanel_workspace_id"], name="workspace_unique_region_mixpanel_id"
            ),
            # A window of 0 hours makes every request born expired; one of years, one nobody closes.
            models.CheckConstraint(
                condition=Q(approval_window_hours__gte=APPROVAL_WINDOW_MIN_HOURS)
                & Q(approval_window_hours__lte=APPROVAL_WINDOW_MAX_HOURS),
                name="workspace_approval_window_1_to_168_hours",
            ),
            models.CheckConstraint(
                condition=Q(approval_when__in=ApprovalWhen.values), name="workspace_approval_when_known"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.get_region_display()} #{self.mixpanel_workspace_id})"

    def get_absolute_url(self) -> str:
        return reverse("experiments:experiment-list", args=[self.pk])

    @property
    def approval_policy(self) -> str:
        """Never, when risky or always (an ApprovalPolicy value): what applies to a press now
        (approval whose switch-off waits out its delay still applies)."""
        return approval_policy_of(requires_approval=self.requires_approval, approval_when=self.approval_when)


class Membership(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.VIEWER)
    # The identity-provider group whose rule granted this membership at sign-in; blank for
    # one added by hand, which sign-in never touches.
    granted_by_group = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["workspace__name", "user__username"]
        constraints = [
            models.UniqueConstraint(fields=["user", "workspace"], name="membership_unique_user_workspace"),
        ]

    def __str__(self) -> str:
        return f"{self.user} is {self.role} of {self.workspace.name}"


class ReasonCategory(models.TextChoices):
    REACHED_SIGNIFICANCE = "significance", "Reached significance"
    HARMFUL = "harmful", "Harmful to users or metrics"
    BROKEN = "broken", "Broken set-up or tracking"
    BUSINESS = "business", "Business decision"
    OTHER = "other", "Other"


class AttemptState(models.TextChoices):
    REQUESTED = "requested", "Requested"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    UNKNOWN = "unknown", "Outcome unknown"
    RECONCILED_APPLIED = "reconciled_applied", "Reconciled: applied"
    RECONCILED_NOT_APPLIED = "reconciled_not_applied", "Reconciled: not applied"
    # Two-person approval: a request waits for a second person; an approval moves it to
    # REQUESTED (and the PUT is sent); a rejection, its requester withdrawing it or the end
    # of its window closes it.
    AWAITING_APPROVAL = "awaiting_approval", "Awaiting approval"
    REJECTED = "rejected", "Rejected"
    EXPIRED = "expired", "Expired"
    WITHDRAWN = "withdrawn", "Withdrawn"
    # Closed unsent at approval: the experiment changed in Mixpanel since the request.
    STALE = "stale", "Stale: changed since the request"


class AttemptAction(models.TextChoices):
    """What an attempt asks Mixpanel to do to one experiment."""

    CONCLUSION = "conclusion", "Force conclude"
    DECISION = "decision", "Decision"


def decision_words(*, success: bool, variant: str) -> str:
    """The decision as a person says it: "ship variant treatment" or "ship none"."""
    return f"ship variant {variant}" if success else "ship none"


class ConclusionAttempt(models.Model):
    """One press of "Force conclude" or "Record the decision", from request to final outcome.

    A decision keeps its note in `reason_text` and its PATCH body (success,
    variant, message) in `request_body`; it has no reason category or end date.

    The truth is the append-only AuditEntry chain; this row is its per-attempt
    projection so that the audit list can filter and page a million attempts by
    index. Its request fields never change after insert; only the outcome columns
    move forward, and `verify_audit` checks them against the entries.
    """

    workspace = models.ForeignKey(Workspace, on_delete=models.PROTECT, related_name="attempts")
    action = models.CharField(max_length=10, choices=AttemptAction.choices, default=AttemptAction.CONCLUSION)
    experiment_id = models.CharField(max_length=100)
    # Snapshots, like admin LogEntry.object_repr: the record reads well after renames.
    experiment_name = models.CharField(max_length=500, blank=True)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    actor_name = models.CharField(max_length=300)
    reason_category = models.CharField(max_length=20, choices=ReasonCategory.choices, blank=True)
    reason_text = models.TextField(blank=True)
    end_date = models.DateTimeField(null=True, blank=True)
    request_body = models.JSONField(default=dict)
    created_at = models.DateTimeField(default=timezone.now)

    state = models.CharField(max_length=30, choices=AttemptState.choices, default=AttemptState.REQUESTED)
    failure_reason = models.TextField(blank=True)
    http_status = models.PositiveSmallIntegerField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    # Two-person approval (blank for a press in a workspace that does not require it):
    # when the request expires, and who approved or rejected it, when and why.
    expires_at = models.DateTimeField(null=True, blank=True)
    reviewer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    reviewer_name = models.CharField(max_length=300, blank=True)
    review_note = models.TextField(blank=True)
    reviewed_at = models.DateTimeField(null=True, blank=True)
    # A conclusion pressed where two-person approval had been turned off: since when.
    approval_off_since = models.DateTimeField(null=True, blank=True)
    # A request for approval: Mixpanel's `modified` and the plan's hash read at the press, so
    # an approval finding either changed is refused as stale. Blank for a press that sends at once.
    experiment_modified = models.DateTimeField(null=True, blank=True)
    plan_hash = models.CharField(max_length=64, blank=True)
    # Why a press became a request for approval: the workspace's policy and the risk rules
    # that applied ([{"rule": ..., "words": ...}]); empty for a press that needed none.
    approval_rules = models.JSONField(default=list, blank=True)

    # The state machine, in one place. services.attempts.attempt_transition makes every
    # move, as a compare-and-set from the states MOVES_FROM allows for the target.
    #
    #   (a press) -> requested -> succeeded | failed | unknown
    #   (a press needing approval) -> awaiting_approval -> requested | rejected | withdrawn | expired | stale
    #   requested, unknown -> reconciled_applied | reconciled_not_applied (by reading Mixpanel)
    #
    # Sent, or about to be, and no answer recorded yet: reconciling resolves these.
    OPEN_STATES = frozenset({AttemptState.REQUESTED, AttemptState.UNKNOWN})
    # Not final yet: the page shows them as in progress and they keep the claim.
    WAITING_STATES = OPEN_STATES | {AttemptState.AWAITING_APPROVAL}
    # Mixpanel applied the request (its answer said so, or a later read showed it).
    APPLIED_STATES = frozenset({AttemptState.SUCCEEDED, AttemptState.RECONCILED_APPLIED})
    # The attempt holding its experiment's claim after the move to one of these: an applied
    # conclusion keeps it, so the experiment is never concluded twice.
    CLAIM_HOLDING_STATES = WAITING_STATES | APPLIED_STATES
    # A request for approval closed with nothing sent: rejected, withdrawn, expired or stale.
    UNSENT_STATES = frozenset({AttemptState.REJECTED, AttemptState.WITHDRAWN, AttemptState.EXPIRED, AttemptState.STALE})
    FINAL_STATES = frozenset(AttemptState) - WAITING_STATES
    # Waiting on a person rather than on Mixpanel: a second person's approval, or someone to
    # look into a lost answer (listed under decisions owed).
    ON_PEOPLE_STATES = frozenset({AttemptState.AWAITING_APPROVAL, AttemptState.UNKNOWN})
    # The states an attempt is created in: a press, or a press that asks for approval.
    FIRST_STATES = frozenset({AttemptState.REQUESTED, AttemptState.AWAITING_APPROVAL})
    # How the failure reason of a refused press (another attempt held the claim) starts,
    # so the audit list tells it from a failed call.
    BLOCKED_PREFIX = "Blocked: "
    MOVES_FROM = {
        AttemptState.REQUESTED: frozenset({AttemptState.AWAITING_APPROVAL}),
        AttemptState.SUCCEEDED: frozenset({AttemptState.REQUESTED}),
        AttemptState.FAILED: frozenset({AttemptState.REQUESTED}),
        AttemptState.UNKNOWN: frozenset({AttemptState.REQUESTED}),
        AttemptState.RECONCILED_APPLIED: OPEN_STATES,
        AttemptState.RECONCILED_NOT_APPLIED: OPEN_STATES,
        AttemptState.REJECTED: frozenset({AttemptState.AWAITING_APPROVAL}),
        AttemptState.EXPIRED: frozenset({AttemptState.AWAITING_APPROVAL}),
        AttemptState.WITHDRAWN: frozenset({AttemptState.AWAITING_APPROVAL}),
        AttemptState.STALE: frozenset({AttemptState.AWAITING_APPROVAL}),
    }

    class Meta:
        ordering = ["-id"]
        permissions = [("review_all_conclusions", "Can review all conclusions")]
        indexes = [
            # Audit list of one workspace, newest first, keyset on id.
            models.Index(fields=["workspace", "-id"], name="attempt_ws_id_idx"),
            # Audit list filtered by person.
            models.Index(fields=["actor", "-id"], name="attempt_actor_id_idx"),
            # Audit list filtered by outcome; reconcile_conclusions finds stuck attempts.
            models.Index(fields=["state", "-id"], name="attempt_state_id_idx"),
            # Date-range filter (created_at bounds become id bounds through this index).
            models.Index(fields=["created_at", "id"], name="attempt_created_idx"),
            # Experiment page: every attempt on one experiment.
            models.Index(fields=["workspace", "experiment_id", "-id"], name="attempt_ws_exp_idx"),
            # Audit list filtered by workspace and outcome ("failures in Growth", newest first):
            # with only the single-column indexes a rare outcome in a big workspace is read
            # by intersecting both, then sorted (migration 0003).
            models.Index(fields=["workspace", "state", "-id"], name="attempt_ws_state_id_idx"),
            # Audit list filtered by person and outcome ("what failed for Pat").
            models.Index(fields=["actor", "state", "-id"], name="attempt_actor_state_id_idx"),
            # Audit list filtered by action ("decisions", newest first).
            models.Index(fields=["action", "-id"], name="attempt_action_id_idx"),
        ]

    def __str__(self) -> str:
        return f"Attempt #{self.pk} on {self.experiment_name or self.experiment_id}"

    def get_absolute_url(self) -> str:
        return reverse("experiments:audit-detail", args=[self.pk])

    @property
    def is_open(self) -> bool:
        return self.state in self.OPEN_STATES

    @property
    def is_waiting(self) -> bool:
        return self.state in self.WAITING_STATES

    @property
    def is_applied(self) -> bool:
        return self.state in self.APPLIED_STATES

    @property
    def is_awaiting_approval(self) -> bool:
        return self.state == AttemptState.AWAITING_APPROVAL

    @property
    def is_closed_unsent(self) -> bool:
        return self.state in self.UNSENT_STATES

    @property
    def is_unknown(self) -> bool:
        """Sent, and its answer was lost: reconciling settles it by reading Mixpanel."""
        return self.state == AttemptState.UNKNOWN

    @property
    def is_refused_press(self) -> bool:
        """A press refused because another attempt held the claim: it sent nothing."""
        return self.state == AttemptState.FAILED and self.failure_reason.startswith(self.BLOCKED_PREFIX)

    @property
    def is_decision(self) -> bool:
        return self.action == AttemptAction.DECISION

    @property
    def decision_words(self) -> str:
        """A decision as a person says it ("ship variant treatment", "ship none"); "" for a conclusion."""
        if not self.is_decision:
            return ""
        body = self.request_body or {}
        return decision_words(success=bool(body.get("success")), variant=body.get("variant") or "")


class ConclusionClaim(models.Model):
    """The one mutable lock that makes a force conclude (or a decision) happen once.

    At most one row per (workspace, experiment, action): inserting it is the claim,
    and the unique constraint is what makes two clicks in two processes safe. It is
    deleted when an attempt definitely failed, so a person may try again. The
    conclusion's claim stays after success, so a decision takes its own.
    """

    workspace = models.ForeignKey(Workspace, on_delete=models.PROTECT, related_name="+")
    action = models.CharField(max_length=10, choices=AttemptAction.choices, default=AttemptAction.CONCLUSION)
    experiment_id = models.CharField(max_length=100)
    attempt = models.OneToOneField(ConclusionAttempt, on_delete=models.PROTECT, related_name="claim")
    claimed_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["workspace", "experiment_id", "action"], name="claim_unique_ws_experiment_action"
            ),
        ]

    def __str__(self) -> str:
        return f"Claim on {self.experiment_id} by attempt #{self.attempt_id}"


class AuditEntry(models.Model):
    """One immutable line of the audit trail.

    Entries form a hash chain: `seq` is gapless and increasing, `prev_hash` is the
    previous entry's `hash`, and `hash` covers a canonical serialisation of this
    entry (see experiments.auditlog). The database refuses UPDATE and DELETE on
    this table (triggers in migration 0002). Write only via auditlog.append_entry.
    """

    seq = models.PositiveBigIntegerField(unique=True)
    kind = models.CharField(max_length=30, choices=EntryKind.choices)
    created_at = models.DateTimeField()
    workspace = models.ForeignKey(Workspace, on_delete=models.PROTECT, null=True, related_name="+")
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, related_name="+")
    actor_name = models.CharField(max_length=300, blank=True)
    attempt = models.ForeignKey(
        ConclusionAttempt, on_delete=models.PROTECT, null=True, blank=True, related_name="entries"
    )
    experiment_id = models.CharField(max_length=100, blank=True)
    experiment_name = models.CharField(max_length=500, blank=True)
    # Canonical JSON text (sorted keys, no spaces), exactly the bytes that were hashed.
    payload = models.TextField(default="{}")
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)

    class Meta:
        ordering = ["seq"]
        verbose_name_plural = "audit entries"
        constraints = [
            # Two appenders that read the same head cannot both commit: no forks.
            models.UniqueConstraint(fields=["prev_hash"], name="auditentry_unique_prev_hash"),
        ]
        indexes = [
            # Attempt detail timeline: entries of one attempt in order.
            models.Index(fields=["attempt", "seq"], name="entry_attempt_seq_idx"),
            # The audit list's controls view: the governance entries of each kind, newest first,
            # keyset on seq (one range read per kind: SQLite cannot match a partial index on
            # "kind IN (...)" when the kinds are bound parameters).
            models.Index(fields=["kind", "-seq"], name="entry_kind_seq_idx"),
            # Bookmarks page "recent activity" of one workspace.
            models.Index(fields=["workspace", "kind", "-seq"], name="entry_ws_kind_seq_idx"),
        ]

    def __str__(self) -> str:
        return f"#{self.seq} {self.kind}"

    @property
    def payload_data(self) -> dict:
        return json.loads(self.payload or "{}")


class DeliveryChannel(models.TextChoices):
    WEBHOOK = "webhook", "Webhook"
    EMAIL = "email", "Email"


class DeliveryState(models.TextChoices):
    PENDING = "pending", "Pending"
    SENDING = "sending", "Sending"
    SENT = "sent", "Sent"
    FAILED = "failed", "Failed, will retry"
    GAVE_UP = "gave_up", "Gave up"


class NotificationDelivery(models.Model):
    """One message about one audit entry to one place (an e-mail address, or the webhook by its hint,
    never its URL): made in the entry's transaction, sent by a task with bounded retries, never
    changing the attempt it tells about. While "sending", `updated_at` is when the try began."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="deliveries")
    entry = models.ForeignKey(AuditEntry, on_delete=models.PROTECT, related_name="deliveries")
    attempt = models.ForeignKey(
        ConclusionAttempt, on_delete=models.PROTECT, null=True, blank=True, related_name="deliveries"
    )
    channel = models.CharField(max_length=10, choices=DeliveryChannel.choices)
    recipient = models.CharField(max_length=254)
    subject = models.CharField(max_length=300, blank=True)
    body = models.TextField(blank=True)
    state = models.CharField(max_length=10, choices=DeliveryState.choices, default=DeliveryState.PENDING)
    tries = models.PositiveSmallIntegerField(default=0)
    last_error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = "notification deliveries"
        constraints = [
            # One message per entry and place, however often the hook runs.
            models.UniqueConstraint(fields=["entry", "channel", "recipient"], name="delivery_unique_entry_place"),
        ]
        indexes = [
            # The workspace settings page: its deliveries, newest first.
            models.Index(fields=["workspace", "-id"], name="delivery_ws_id_idx"),
            # The worker's sweep: unfinished deliveries that nothing has moved on for a while.
            models.Index(fields=["updated_at"], condition=~Q(state__in=["sent", "gave_up"]), name="delivery_open_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.get_channel_display()} to {self.recipient} about entry #{self.entry_id}"


# Models kept in modules of their own; Django finds them here.
from experiments.models.bookmarks import Bookmark, BookmarkKind  # noqa: E402
from experiments.models.identities import ExternalIdentity, GroupRule, RoleChange, RoleChangeAction  # noqa: E402
from experiments.models.operations import (  # noqa: E402
    ApiToken,
    AuditStreamBatch,
    IdempotencyRecord,
    TokenScope,
    WorkerHeartbeat,
)
from experiments.models.owed import (  # noqa: E402
    DigestEmail,
    DigestPeriod,
    NotificationPreference,
    OwedReason,
    OwedReminder,
)
from experiments.models.plans import ScheduledConclusion, ScheduleState, SealedPlan  # noqa: E402

__all__ = [
    "APPROVAL_KINDS",
    "CONCLUDING_ROLES",
    "GOVERNANCE_KINDS",
    "OUTCOME_KINDS",
    "PLAN_KINDS",
    "SCHEDULE_KINDS",
    "ApiToken",
    "ApprovalPolicy",
    "ApprovalWhen",
    "AttemptAction",
    "AttemptState",
    "AuditEntry",
    "AuditStreamBatch",
    "Bookmark",
    "BookmarkKind",
    "ConclusionAttempt",
    "ConclusionClaim",
    "DeliveryChannel",
    "DeliveryState",
    "DigestEmail",
    "DigestPeriod",
    "EntryKind",
    "ExternalIdentity",
    "GroupRule",
    "IdempotencyRecord",
    "Membership",
    "NotificationDelivery",
    "NotificationPreference",
    "OwedReason",
    "OwedReminder",
    "ReasonCategory",
    "Region",
    "Role",
    "RoleChange",
    "RoleChangeAction",
    "ScheduleState",
    "ScheduledConclusion",
    "SealedPlan",
    "TokenScope",
    "WorkerHeartbeat",
    "Workspace",
    "approval_policy_of",
    "decision_words",
]
