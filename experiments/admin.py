from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from experiments.models import (
    AuditEntry,
    Bookmark,
    ConclusionAttempt,
    ConclusionClaim,
    ExternalIdentity,
    GroupRule,
    Membership,
    RoleChange,
    Workspace,
)


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Workspace)
class WorkspaceAdmin(admin.ModelAdmin):
    list_display = ["name", "region", "mixpanel_workspace_id", "mixpanel_project_id", "created_at"]
    list_filter = ["region"]
    search_fields = ["name", "mixpanel_workspace_id"]
    inlines = [MembershipInline]
    # The webhook is set on the workspace's settings page, which seals it; here only its hint shows.
    exclude = ["webhook_url_sealed"]
    readonly_fields = ["webhook_url_hint"]


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "workspace", "role", "granted_by_group", "created_at"]
    list_filter = ["role", "workspace__region", "workspace"]
    search_fields = ["user__username", "user__email", "workspace__name"]
    autocomplete_fields = ["user", "workspace"]


class ReadOnlyAdmin(admin.ModelAdmin):
    """The audit trail is evidence: the admin may look, never touch."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyAdmin):
    list_display = ["seq", "kind", "created_at", "actor_name", "workspace", "experiment_name"]
    list_filter = ["kind"]
    search_fields = ["experiment_id", "experiment_name", "actor_name"]
    show_full_result_count = False


@admin.register(ConclusionAttempt)
class ConclusionAttemptAdmin(ReadOnlyAdmin):
    list_display = ["id", "created_at", "actor_name", "workspace", "experiment_name", "state", "http_status"]
    list_filter = ["state", "reason_category"]
    search_fields = ["experiment_id", "experiment_name", "actor_name"]
    show_full_result_count = False


@admin.register(ConclusionClaim)
class ConclusionClaimAdmin(ReadOnlyAdmin):
    list_display = ["workspace", "experiment_id", "attempt", "claimed_at"]


@admin.register(Bookmark)
class BookmarkAdmin(admin.ModelAdmin):
    list_display = ["__str__", "kind", "workspace", "created_by_name", "created_at"]
    list_filter = ["kind", "workspace"]
    search_fields = ["title", "experiment_name", "experiment_id", "note"]


@admin.register(GroupRule)
class GroupRuleAdmin(admin.ModelAdmin):
    """Group-to-role rules, applied to each person at their next sign-in."""

    list_display = ["group", "workspace", "role", "created_at"]
    list_filter = ["role", "workspace"]
    search_fields = ["group", "workspace__name"]
    autocomplete_fields = ["workspace"]


@admin.register(RoleChange)
class RoleChangeAdmin(ReadOnlyAdmin):
    """Every change of a person's roles made by sign-in: who, which workspace, role, when, which group."""

    list_display = ["created_at", "user_name", "action", "role", "previous_role", "workspace_name", "group", "source"]
    list_filter = ["action", "source", "role"]
    search_fields = ["user_name", "workspace_name", "group"]
    date_hierarchy = "created_at"


@admin.register(ExternalIdentity)
class ExternalIdentityAdmin(ReadOnlyAdmin):
    list_display = ["user", "issuer", "subject", "created_at", "last_sign_in_at"]
    search_fields = ["subject", "user__username", "user__email"]
