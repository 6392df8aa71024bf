"""What is owed: the reminders already given about an experiment's state, the weekly digest's
periods and each one's e-mails, and each person's choice about the digest."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class OwedReason(models.TextChoices):
    """Why an experiment is owed a decision (selectors.owed holds the rules)."""

    DUE = "due", "Planned length reached"
    OVERDUE = "overdue", "Overdue"
    UNDECIDED = "undecided", "Concluded, not decided"
    NO_DATA = "no_data", "No data"


class OwedReminder(models.Model):
    """The reminder given when one experiment of one workspace entered one owed state.

    Inserting the row is the claim: the unique constraint lets two workers (or two
    refreshes) that see the same change record it once, and the reminder's audit entry
    is written in the same transaction. Rows are never deleted, so a state is told once
    in an experiment's life, however often it leaves and re-enters it.
    """

    workspace = models.ForeignKey("experiments.Workspace", on_delete=models.CASCADE, related_name="+")
    experiment_id = models.CharField(max_length=100)
    reason = models.CharField(max_length=10, choices=OwedReason.choices)
    # When the state began by the rules ("since"), and the entry that told it.
    since = models.DateTimeField()
    entry = models.OneToOneField("experiments.AuditEntry", on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["workspace", "experiment_id", "reason"], name="owedreminder_unique_ws_experiment_reason"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_reason_display()}: {self.experiment_id} (workspace #{self.workspace_id})"


class DigestPeriod(models.Model):
    """One week's digest (ISO year and week). Inserting it is the claim, in the transaction
    that writes the week's messages, so several workers send a week's digest once."""

    year = models.PositiveSmallIntegerField()
    week = models.PositiveSmallIntegerField()
    sent_at = models.DateTimeField(default=timezone.now)
    # How many people's e-mails and workspaces' webhook messages it wrote.
    people = models.PositiveIntegerField(default=0)
    workspaces = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-year", "-week"]
        constraints = [models.UniqueConstraint(fields=["year", "week"], name="digestperiod_unique_year_week")]

    def __str__(self) -> str:
        return f"digest of {self.year}-W{self.week:02d}"


class DigestEmail(models.Model):
    """One person's weekly digest e-mail: written with its period's claim, then sent by a task
    with the notifications' retries (NOTIFY_MAX_TRIES, NOTIFY_BACKOFF_SECONDS)."""

    period = models.ForeignKey(DigestPeriod, on_delete=models.CASCADE, related_name="emails")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    recipient = models.CharField(max_length=254)
    subject = models.CharField(max_length=300)
    body = models.TextField()
    # The states of NotificationDelivery: pending, sent, failed (will retry), gave up.
    state = models.CharField(max_length=10, default="pending")
    tries = models.PositiveSmallIntegerField(default=0)
    last_error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [models.UniqueConstraint(fields=["period", "user"], name="digestemail_unique_period_user")]
        indexes = [
            # The account's notifications page: one person's latest digests.
            models.Index(fields=["user", "-id"], name="digestemail_user_id_idx"),
        ]

    def __str__(self) -> str:
        return f"digest to {self.recipient} ({self.period})"


class NotificationPreference(models.Model):
    """A person's own choices about what reaches them (their notifications page). No row: the defaults."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    weekly_digest = models.BooleanField("email me the weekly digest of decisions owed", default=True)
    updated_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"notification choices of user #{self.user_id}"
