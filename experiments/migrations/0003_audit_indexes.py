"""Indexes for the audit list's combined filters.

Each serves one query of experiments.selectors.audit_attempt_page, newest first by id:
- attempt_ws_state_id_idx: a workspace's attempts with one outcome ("failures in Growth").
- attempt_actor_state_id_idx: one person's attempts with one outcome ("what failed for Pat").
Without them a rare outcome in a big workspace (or of a busy person) is found by
intersecting the single-column indexes and sorting the result: ~50 ms at a million
attempts on PostgreSQL instead of well under one.
"""

from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("experiments", "0002_audit_append_only"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddIndex(
            model_name="conclusionattempt",
            index=models.Index(fields=["workspace", "state", "-id"], name="attempt_ws_state_id_idx"),
        ),
        migrations.AddIndex(
            model_name="conclusionattempt",
            index=models.Index(fields=["actor", "state", "-id"], name="attempt_actor_state_id_idx"),
        ),
    ]
