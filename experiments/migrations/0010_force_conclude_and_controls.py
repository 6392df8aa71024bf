# Force conclude is called by its button's name in the action and entry kind labels; a
# requester withdrawing their request is its own state and entry kind (it used to be a
# rejection with the requester as reviewer). Choices live in Django only: no table changes.
# A partial index serves the audit list's view of the governance entries. An admin's test
# message is an entry kind of its own.

from django.db import migrations, models

ACTION_CHOICES = [("conclusion", "Force conclude"), ("decision", "Decision")]
STATE_CHOICES = [
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
]
KIND_CHOICES = [
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
    ("notification_test", "Test message"),
]


class Migration(migrations.Migration):
    dependencies = [
        ("experiments", "0008_entry_kind_settings_changed"),
    ]

    operations = [
        migrations.AlterField(
            model_name="conclusionattempt",
            name="action",
            field=models.CharField(choices=ACTION_CHOICES, default="conclusion", max_length=10),
        ),
        migrations.AlterField(
            model_name="conclusionclaim",
            name="action",
            field=models.CharField(choices=ACTION_CHOICES, default="conclusion", max_length=10),
        ),
        migrations.AlterField(
            model_name="conclusionattempt",
            name="state",
            field=models.CharField(choices=STATE_CHOICES, default="requested", max_length=30),
        ),
        migrations.AlterField(
            model_name="auditentry",
            name="kind",
            field=models.CharField(choices=KIND_CHOICES, max_length=30),
        ),
        # The audit list's controls view pages the governance entries by seq.
        migrations.AddIndex(
            model_name="auditentry",
            index=models.Index(
                condition=models.Q(("kind__in", ["settings_changed"])),
                fields=["-seq"],
                name="entry_governance_seq_idx",
            ),
        ),
    ]
