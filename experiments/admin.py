from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.db.models import QuerySet
from django.http import HttpRequest

from experiments.models import (
    ApiToken,
    AuditEntry,
    AuditStreamBatch,
    Bookmark,
    ConclusionAttempt,
    ConclusionClaim,
    ExternalIdentity,
    GroupRule,
    Membership,
    RoleChange,
    Workspace,
)
from experiments.selectors import workspaces as workspace_selectors
from experiments.services import roles as role_services
from experiments.services import tokens as token_services
from experiments.services import workspaces as workspace_services

# The settings that go through workspace_settings_update, whichever form edits them.
GOVERNED_FIELDS = (
    "email_bookmarkers",
    "requires_approval",
    "approval_when",
    "approval_window_hours",
    *Workspace.REMINDER_FIELDS,
)


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]
    # Set by sign-in's group rules; a role given here makes the membership a hand-given one.
    readonly_fields = ["granted_by_group"]


class WorkspaceAdminForm(forms.ModelForm):
    """The workspace form, starting from the settings as its admins last asked for them:
    approval whose switch-off waits out its delay shows as off, so saving the form for another
    field leaves the switch-off planned."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.initial.update(workspace_selectors.workspace_settings_wanted(workspace=self.instance))


@admin.register(Workspace)
class WorkspaceAdmin(admin.ModelAdmin):
    """Workspaces. Their notification and approval settings change only through the settings
    service, as on the Settings page: chained in the audit trail, told when loosened, bounded."""

    form = WorkspaceAdminForm
    list_display = ["name", "region", "mixpanel_workspace_id", "mixpanel_project_id", "created_at"]
    list_filter = ["region"]
    search_fields = ["name", "mixpanel_workspace_id"]
    inlines = [MembershipInline]
    # The webhook is set on the workspace's settings page, which seals it; here only its hint shows.
    exclude = ["webhook_url_sealed"]
    readonly_fields = ["webhook_url_hint", "approval_off_at"]

    def save_model(self, request: HttpRequest, obj: Workspace, form: Any, change: bool) -> None:
        kept = Workspace.objects.get(pk=obj.pk) if change else Workspace()
        wanted = workspace_selectors.workspace_settings_wanted(workspace=kept)
        wanted.update({name: form.cleaned_data[name] for name in GOVERNED_FIELDS if name in form.changed_data})
        # The row is saved with the settings it has (a new one with the defaults); the service
        # then makes the change, so the form cannot write them around the chain.
        for name in GOVERNED_FIELDS:
            setattr(obj, name, getattr(kept, name))
        super().save_model(request, obj, form, change)
        workspace_services.workspace_settings_update(
            workspace=obj, user=request.user, webhook_url="", remove_webhook=False, **wanted
        )

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        if formset.model is not Membership:
            super().save_formset(request, form, formset, change)
            return
        # Through the service, so every grant, change and removal is chained.
        changed = formset.save(commit=False)
        for membership in formset.deleted_objects:
            role_services.membership_delete(
                membership=membership, actor=request.user, source=role_services.SOURCE_ADMIN
            )
        for membership in changed:
            role_services.membership_save(membership=membership, actor=request.user, source=role_services.SOURCE_ADMIN)
        formset.save_m2m()


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    """Memberships; every grant, change and removal made here is chained in the audit trail."""

    list_display = ["user", "workspace", "role", "granted_by_group", "created_at"]
    list_filter = ["role", "workspace__region", "workspace"]
    search_fields = ["user__username", "user__email", "workspace__name"]
    autocomplete_fields = ["user", "workspace"]
    readonly_fields = ["granted_by_group"]

    def save_model(self, request: HttpRequest, obj: Membership, form: Any, change: bool) -> None:
        role_services.membership_save(membership=obj, actor=request.user, source=role_services.SOURCE_ADMIN)

    def delete_model(self, request: HttpRequest, obj: Membership) -> None:
        role_services.membership_delete(membership=obj, actor=request.user, source=role_services.SOURCE_ADMIN)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Membership]) -> None:
        for membership in queryset.select_related("user", "workspace"):
            self.delete_model(request, membership)


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
    """Group-to-role rules, applied to each person at their next sign-in or re-check; every
    rule added, changed or removed here is chained in the audit trail."""

    list_display = ["group", "workspace", "role", "created_at"]
    list_filter = ["role", "workspace"]
    search_fields = ["group", "workspace__name"]
    autocomplete_fields = ["workspace"]

    def save_model(self, request: HttpRequest, obj: GroupRule, form: Any, change: bool) -> None:
        role_services.group_rule_save(rule=obj, actor=request.user, source=role_services.SOURCE_ADMIN)

    def delete_model(self, request: HttpRequest, obj: GroupRule) -> None:
        role_services.group_rule_delete(rule=obj, actor=request.user, source=role_services.SOURCE_ADMIN)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[GroupRule]) -> None:
        for rule in queryset.select_related("workspace"):
            self.delete_model(request, rule)


@admin.register(RoleChange)
class RoleChangeAdmin(ReadOnlyAdmin):
    """Every change of a person's roles made by sign-in: who, which workspace, role, when, which group."""

    list_display = ["created_at", "user_name", "action", "role", "previous_role", "workspace_name", "group", "source"]
    list_filter = ["action", "source", "role"]
    search_fields = ["user_name", "workspace_name", "group"]
    date_hierarchy = "created_at"


@admin.register(ApiToken)
class ApiTokenAdmin(ReadOnlyAdmin):
    """People's API tokens (never their secrets): an admin may revoke one, which is chained."""

    list_display = ["name", "user", "scope", "prefix", "created_at", "expires_at", "last_used_at", "revoked_at"]
    list_filter = ["scope"]
    search_fields = ["name", "user__username", "prefix"]
    actions = ["revoke"]

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        # Revoking changes a token: those who may only view tokens may not.
        return request.user.has_perm("experiments.change_apitoken")

    @admin.action(description="Revoke the selected tokens", permissions=["revoke"])
    def revoke(self, request: HttpRequest, queryset: Any) -> None:
        revoked = 0
        for token in queryset.filter(revoked_at__isnull=True).select_related("user"):
            try:
                token_services.api_token_revoke(token=token, by=request.user)
            except ValueError:
                continue  # revoked by someone else meanwhile
            revoked += 1
        self.message_user(request, f"Revoked {revoked} token(s).")


@admin.register(AuditStreamBatch)
class AuditStreamBatchAdmin(ReadOnlyAdmin):
    """What was pushed to the SIEM collector, and what gave up."""

    list_display = ["first_seq", "last_seq", "state", "tries", "last_error", "sent_at"]
    list_filter = ["state"]


@admin.register(ExternalIdentity)
class ExternalIdentityAdmin(ReadOnlyAdmin):
    list_display = ["user", "issuer", "subject", "created_at", "last_sign_in_at"]
    search_fields = ["subject", "user__username", "user__email"]


admin.site.unregister(get_user_model())


@admin.register(get_user_model())
class AccountAdmin(UserAdmin):
    """Django's user admin, with the roles an account holds chained like the others: superuser
    (admin of every workspace), "Can review all conclusions" (directly or through a group), and
    every role of an account deleted here."""

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        # What the account held before this form, read before any of the form is saved;
        # permissions and groups are saved after this, in save_related.
        request.desk_roles_before = role_services.account_roles(user=obj)
        super().save_model(request, obj, form, change)

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        role_services.account_roles_changed(
            user=form.instance, before=request.desk_roles_before, actor=request.user, source=role_services.SOURCE_ADMIN
        )

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        role_services.account_delete(user=obj, actor=request.user, source=role_services.SOURCE_ADMIN)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        for user in queryset:
            self.delete_model(request, user)
