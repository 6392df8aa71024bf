"""The sealed plan of each experiment, and force concludes scheduled for later."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone


class SealedPlan(models.Model):
    """The plan of one experiment as the dashboard first saw it active, and as last seen.

    Inserting the row is the seal: the unique constraint lets every process that reads the
    experiment at once seal it once, with its plan_sealed entry in the same transaction. A
    later read that finds another plan moves `plan_hash` by compare-and-set and appends
    plan_changed. The row is the projection of those entries: verify_audit compares them.
    """

    workspace = models.ForeignKey("experiments.Workspace", on_delete=models.PROTECT, related_name="+")
    experiment_id = models.CharField(max_length=100)
    experiment_name = models.CharField(max_length=500, blank=True)
    # The plan as last seen: canonical JSON (experiments.mixpanel.plan), its SHA-256, and
    # Mixpanel's `modified` when it was read.
    plan = models.TextField()
    plan_hash = models.CharField(max_length=64)
    modified = models.DateTimeField(null=True, blank=True)
    sealed_at = models.DateTimeField(default=timezone.now)
    # First seen more than a day after its start: the seal vouches for the plan only from then.
    as_first_seen = models.BooleanField(default=False)
    changed_at = models.DateTimeField(null=True, blank=True)
    seal_entry = models.OneToOneField("experiments.AuditEntry", on_delete=models.PROTECT, related_name="+")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["workspace", "experiment_id"], name="sealedplan_unique_ws_experiment"),
        ]

    def __str__(self) -> str:
        return f"Plan of {self.experiment_name or self.experiment_id} sealed {self.sealed_at:%Y-%m-%d}"


class ScheduleState(models.TextChoices):
    SCHEDULED = "scheduled", "Scheduled"
    CANCELLED = "cancelled", "Cancelled"
    FIRED = "fired", "Ran"


class ScheduledConclusion(models.Model):
    """A Force conclude set for a later time, pressed by the worker under its author's name.

    At most one is live (scheduled) per experiment. Firing is a compare-and-set from
    scheduled to fired, so one worker wins whatever the clocks say; the press it makes is
    an ordinary attempt (`attempt`), with its claim and, where the workspace asks for it,
    two-person approval.
    """

    workspace = models.ForeignKey("experiments.Workspace", on_delete=models.PROTECT, related_name="schedules")
    experiment_id = models.CharField(max_length=100)
    experiment_name = models.CharField(max_length=500, blank=True)
    run_at = models.DateTimeField()
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    author_name = models.CharField(max_length=300)
    reason_category = models.CharField(max_length=20)
    reason_text = models.TextField(blank=True)
    end_date = models.DateTimeField(null=True, blank=True)
    state = models.CharField(max_length=10, choices=ScheduleState.choices, default=ScheduleState.SCHEDULED)
    created_at = models.DateTimeField(default=timezone.now)
    # Who cancelled it (a person, or the worker finding its author's role gone) and why.
    cancelled_at = models.DateTimeField(null=True, blank=True)
    cancelled_by_name = models.CharField(max_length=300, blank=True)
    cancel_reason = models.TextField(blank=True)
    fired_at = models.DateTimeField(null=True, blank=True)
    # Why the press it made was refused before any attempt was recorded; blank otherwise.
    refusal = models.TextField(blank=True)
    attempt = models.ForeignKey(
        "experiments.ConclusionAttempt", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["run_at", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["workspace", "experiment_id"],
                condition=Q(state="scheduled"),
                name="schedule_one_live_per_experiment",
            ),
        ]
        indexes = [
            # The worker's sweep for schedules whose task was lost: live ones due by now.
            models.Index(fields=["run_at"], condition=Q(state="scheduled"), name="schedule_due_idx"),
            # The same sweep for fired ones whose press never answered (their worker stopped).
            models.Index(
                fields=["fired_at"],
                condition=Q(state="fired", attempt__isnull=True, refusal=""),
                name="schedule_unfinished_idx",
            ),
            # The list, experiment page and home page: a workspace's live schedules.
            models.Index(fields=["workspace", "state", "experiment_id"], name="schedule_ws_state_idx"),
        ]

    def __str__(self) -> str:
        return f"Force conclude of {self.experiment_name or self.experiment_id} at {self.run_at:%Y-%m-%d %H:%M}"

    @property
    def is_live(self) -> bool:
        return self.state == ScheduleState.SCHEDULED

    @property
    def is_unfinished(self) -> bool:
        """Fired, and its press has neither an attempt nor a refusal yet."""
        return self.state == ScheduleState.FIRED and self.attempt_id is None and not self.refusal
