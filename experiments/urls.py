from __future__ import annotations

from django.urls import path, register_converter

from experiments.converters import ExperimentIdConverter, RowIdConverter
from experiments.views import account, actions, attempts, audit, bookmarks, schedules
from experiments.views import experiments as exp
from experiments.views import settings as workspace_settings

app_name = "experiments"
register_converter(RowIdConverter, "id")
register_converter(ExperimentIdConverter, "experiment")

# Workspace routes share one prefix; the view's first act is the access check.
W = "w/<id:workspace_pk>/"

urlpatterns = [
    # The experiments page, one experiment, and force conclude
    path(W, exp.experiment_list, name="experiment-list"),
    path(W + "refresh/", exp.experiment_list_refresh, name="experiment-list-refresh"),
    path(W + "experiments/<experiment:experiment_id>/", exp.experiment_detail, name="experiment-detail"),
    path(
        W + "experiments/<experiment:experiment_id>/force-conclude/",
        actions.experiment_force_conclude,
        name="experiment-force-conclude",
    ),
    path(W + "experiments/<experiment:experiment_id>/decide/", actions.experiment_decide, name="experiment-decide"),
    path(
        W + "experiments/<experiment:experiment_id>/schedule/",
        schedules.experiment_schedule,
        name="experiment-schedule",
    ),
    path(
        W + "experiments/<experiment:experiment_id>/schedule/cancel/",
        schedules.experiment_schedule_cancel,
        name="experiment-schedule-cancel",
    ),
    # An open conclusion attempt: its waiting line (polled) and "Check Mixpanel now"
    path(W + "attempts/<id:attempt_pk>/status/", attempts.attempt_status, name="attempt-status"),
    path(W + "attempts/<id:attempt_pk>/check/", attempts.attempt_check, name="attempt-check"),
    # A request waiting for a second person's approval: approve, reject or withdraw
    path(W + "attempts/<id:attempt_pk>/review/", attempts.attempt_review, name="attempt-review"),
    # Audit review: read-only, for members and reviewers of all workspaces
    path("audit/", audit.audit_list, name="audit-list"),
    path("audit/<id:pk>/", audit.audit_detail, name="audit-detail"),
    path("audit/export.<str:fmt>", audit.audit_export, name="audit-export"),
    path(W + "audit/", audit.audit_workspace_list, name="audit-workspace-list"),
    # Team bookmarks
    path(W + "bookmarks/", bookmarks.bookmark_list, name="bookmark-list"),
    path(W + "bookmarks/add/", bookmarks.bookmark_create, name="bookmark-create"),
    path(W + "bookmarks/<id:bookmark_pk>/edit/", bookmarks.bookmark_update, name="bookmark-update"),
    path(W + "bookmarks/<id:bookmark_pk>/delete/", bookmarks.bookmark_delete, name="bookmark-delete"),
    path(W + "experiments/<experiment:experiment_id>/star/", bookmarks.bookmark_toggle, name="bookmark-toggle"),
    # One's own notification choices (the weekly digest)
    path("account/notifications/", account.account_notifications, name="account-notifications"),
    # One's own API tokens
    path("account/tokens/", account.account_tokens, name="account-tokens"),
    path("account/tokens/new/", account.account_token_create, name="account-token-create"),
    path("account/tokens/<id:token_pk>/revoke/", account.account_token_revoke, name="account-token-revoke"),
    # The workspace's settings: notifications and two-person approval (admins only)
    path(W + "settings/", workspace_settings.workspace_settings, name="workspace-settings"),
    path(W + "settings/test-message/", workspace_settings.workspace_notification_test, name="workspace-test-message"),
]
