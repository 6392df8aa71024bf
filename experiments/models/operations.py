"""What keeps the dashboard running and reachable from scripts: the task worker's heartbeat,
personal API tokens, the answers kept for Idempotency-Keys, and the audit trail's stream
to a SIEM."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class WorkerHeartbeat(models.Model):
    """A task worker's latest sign of life, written by its housekeeping thread every few
    seconds; /readyz/worker and /metrics read it."""

    worker_id = models.CharField(max_length=64, unique=True)
    hostname = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    beat_at = models.DateTimeField()

    class Meta:
        indexes = [
            # /readyz/worker: the latest beat of any worker.
            models.Index(fields=["-beat_at"], name="heartbeat_beat_idx"),
        ]

    def __str__(self) -> str:
        return f"worker {self.worker_id} on {self.hostname} (pid {self.pid})"


class TokenScope(models.TextChoices):
    READ = "read", "Read: lists and the audit trail"
    ACT = "act", "Act: also force conclude, decide, approve, reject and withdraw"


class ApiToken(models.Model):
    """A person's API token: it acts as its owner, with the owner's current roles.

    Only the SHA-256 of the token is stored; the token itself is shown once, when made.
    `prefix` (its first characters) tells tokens apart on pages and in the chain.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    scope = models.CharField(max_length=4, choices=TokenScope.choices)
    prefix = models.CharField(max_length=16)
    token_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # The account page: one person's tokens, newest first.
            models.Index(fields=["user", "-created_at"], name="apitoken_user_created_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…) of {self.user}"

    @property
    def is_usable(self) -> bool:
        return self.revoked_at is None and self.expires_at > timezone.now()


class IdempotencyRecord(models.Model):
    """The first answer to an API POST made with an Idempotency-Key, replayed for the same key.

    One row per (token, key): inserting it is the claim, so two requests with one key act once.
    `fingerprint` is the request's method, path and body (hashed), so a key reused for another
    request is refused instead of answered with the first one's answer.
    """

    token = models.ForeignKey(ApiToken, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=200)
    fingerprint = models.CharField(max_length=64)
    status = models.PositiveSmallIntegerField(null=True, blank=True)  # None while the first request runs
    body = models.JSONField(null=True, blank=True)
    headers = models.JSONField(default=dict)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["token", "key"], name="idempotency_unique_token_key"),
        ]
        indexes = [
            # Forgetting records past the replay window, oldest first.
            models.Index(fields=["created_at"], name="idempotency_created_idx"),
        ]

    def __str__(self) -> str:
        return f"Idempotency-Key {self.key} of token #{self.token_id}"


class AuditStreamBatch(models.Model):
    """Entries first_seq..last_seq of the hash chain, pushed to the SIEM collector
    (AUDIT_STREAM_URL) as one batch, in order, with notifications' retry plan.

    One batch is open at a time; the stream goes on after the last batch that was sent or
    gave up, so a batch that gave up is a gap in the SIEM (the feed API can fill it) and a
    record here. `first_seq` is unique: two workers never push the same batch twice.
    """

    first_seq = models.PositiveBigIntegerField(unique=True)
    last_seq = models.PositiveBigIntegerField()
    state = models.CharField(max_length=10, default="pending")  # a DeliveryState value
    tries = models.PositiveSmallIntegerField(default=0)
    next_try_at = models.DateTimeField(default=timezone.now)
    last_error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-first_seq"]

    def __str__(self) -> str:
        return f"audit entries {self.first_seq}..{self.last_seq} to the SIEM ({self.state})"
