"""Who a person is at the identity provider, the group rules that give roles at sign-in,
and the record of the role changes sign-in makes."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from experiments.models.roles import Role


class GroupRule(models.Model):
    """Members of an identity-provider group get a role in a workspace, at every sign-in."""

    group = models.CharField(max_length=200, help_text="The group's name exactly as the identity provider sends it.")
    workspace = models.ForeignKey("experiments.Workspace", on_delete=models.CASCADE, related_name="group_rules")
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.VIEWER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["group", "workspace__name"]
        constraints = [
            models.UniqueConstraint(fields=["group", "workspace"], name="grouprule_unique_group_workspace"),
        ]

    def __str__(self) -> str:
        return f"{self.group} → {self.role} of {self.workspace.name}"


class ExternalIdentity(models.Model):
    """Who a user is at an identity provider: the ID token's `sub` under its issuer.

    The subject, not the e-mail address, is the identity: an address can be reused or
    changed, the subject cannot, and an SSO account is never joined to a local one by address.
    """

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="external_identity")
    issuer = models.CharField(max_length=500)
    subject = models.CharField(max_length=255)
    created_at = models.DateTimeField(auto_now_add=True)
    last_sign_in_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["issuer", "subject"], name="externalidentity_unique_issuer_subject"),
        ]

    def __str__(self) -> str:
        return f"{self.subject} at {self.issuer}"


class RoleChangeAction(models.TextChoices):
    ADDED = "added", "Added"
    CHANGED = "changed", "Changed"
    REMOVED = "removed", "Removed"


class RoleChange(models.Model):
    """One change of a person's roles made by sign-in, kept for admins to review.

    Names are snapshots, like the audit trail's: the record reads well after the user,
    workspace or rule is gone. A blank workspace means the review-all (auditor) permission.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    user_name = models.CharField(max_length=300)
    workspace = models.ForeignKey(
        "experiments.Workspace", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    workspace_name = models.CharField(max_length=200, blank=True)
    action = models.CharField(max_length=10, choices=RoleChangeAction.choices)
    role = models.CharField(max_length=20)
    previous_role = models.CharField(max_length=20, blank=True)
    group = models.CharField(max_length=200, blank=True)
    source = models.CharField(max_length=20)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # The admin's list, newest first.
            models.Index(fields=["-created_at", "-id"], name="rolechange_created_idx"),
        ]

    def __str__(self) -> str:
        where = self.workspace_name or "all workspaces"
        return f"{self.user_name}: {self.action} {self.role} in {where}"
