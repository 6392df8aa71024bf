# Force conclude is called by its button's name in the action and entry kind labels; a
# requester withdrawing their request is its own state and entry kind (it used to be a
# rejection with the requester as reviewer). Choices live in Django only: no table changes.
# An index on kind and seq serves the audit list's view of the governance entries (settings,
# roles and tokens). An admin's test message is an entry kind of its own.


from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("experiments", "0012_audit_stream"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AlterField(
            model_name="auditentry",
            name="kind",
            field=models.CharField(
                choices=[
                    ("conclusion_requested", "Force conclude requested"),
                    ("conclusion_succeeded", "Force conclude succeeded"),
                    ("conclusion_failed", "Force conclude failed"),
                    ("conclusion_unknown", "Force conclude outcome unknown"),
                    ("conclusion_reconciled", "Force conclude reconciled"),
                    ("conclusion_late_answer", "Late answer after reconciling"),
                    ("decision_requested", "Decision requested"),
                    ("decision_succeeded", "Decision succeeded"),
                    ("decision_failed", "Decision failed"),
                    ("decision_unknown", "Decision outcome unknown"),
                    ("decision_reconciled", "Decision reconciled"),
                    ("decision_late_answer", "Late decision answer after reconciling"),
                    ("approval_requested", "Approval requested"),
                    ("approval_approved", "Request approved"),
                    ("approval_rejected", "Request rejected"),
                    ("approval_expired", "Request expired"),
                    ("approval_withdrawn", "Request withdrawn"),
                    ("bookmark_added", "Bookmark added"),
                    ("bookmark_removed", "Bookmark removed"),
                    ("settings_changed", "Workspace settings changed"),
                    ("role_changed", "Role changed"),
                    ("token_created", "API token created"),
                    ("token_revoked", "API token revoked"),
                    ("notification_test", "Test message"),
                ],
                max_length=30,
            ),
        ),
        migrations.AlterField(
            model_name="conclusionattempt",
            name="action",
            field=models.CharField(
                choices=[("conclusion", "Force conclude"), ("decision", "Decision")],
                default="conclusion",
                max_length=10,
            ),
        ),
        migrations.AlterField(
            model_name="conclusionattempt",
            name="state",
            field=models.CharField(
                choices=[
                    ("requested", "Requested"),
                    ("succeeded", "Succeeded"),
                    ("failed", "Failed"),
                    ("unknown", "Outcome unknown"),
                    ("reconciled_applied", "Reconciled: applied"),
                    ("reconciled_not_applied", "Reconciled: not applied"),
                    ("awaiting_approval", "Awaiting approval"),
                    ("rejected", "Rejected"),
                    ("expired", "Expired"),
                    ("withdrawn", "Withdrawn"),
                ],
                default="requested",
                max_length=30,
            ),
        ),
        migrations.AlterField(
            model_name="conclusionclaim",
            name="action",
            field=models.CharField(
                choices=[("conclusion", "Force conclude"), ("decision", "Decision")],
                default="conclusion",
                max_length=10,
            ),
        ),
        migrations.AddIndex(
            model_name="auditentry",
            index=models.Index(fields=["kind", "-seq"], name="entry_kind_seq_idx"),
        ),
    ]
