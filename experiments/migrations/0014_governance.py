# Governance nobody can quietly bypass.
#
# A workspace keeps when two-person approval turns (or turned) off, and an attempt since when it
# was off when it was pressed. A notification is claimed while it is sent, and indexed so the
# workers' sweep finds those left unfinished.
#
# The database refuses an approval window outside 1 to 168 hours. Before that constraint, a
# window outside it (the admin site accepted 0 and 32,767) is brought into range, and every
# workspace whose settings differ from what its last settings_changed entry recorded (changed
# in the admin site, which chained nothing, or before settings were chained) gets an entry
# recording them as found, so verify_audit, which now checks each workspace's settings against
# its last chained change, starts from the truth and says so in the chain.

import json

import django.core.validators
from django.db import migrations, models
from django.utils import timezone

from experiments import auditlog

ACTOR_NAME = "migration 0014 (settings as found)"
WINDOW_MIN, WINDOW_MAX = 1, 168


def _settings(workspace):
    return {
        "webhook": workspace.webhook_url_hint if workspace.webhook_url_sealed else "",
        "email_bookmarkers": workspace.email_bookmarkers,
        "requires_approval": workspace.requires_approval,
        "approval_window_hours": workspace.approval_window_hours,
    }


def _append(AuditEntry, connection, workspace, payload):
    """One settings_changed entry, appended as experiments.auditlog appends (same lock, same hash)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [auditlog._APPEND_LOCK_KEY])
    head = AuditEntry.objects.order_by("-seq").values_list("seq", "hash").first()
    seq, prev_hash = (head[0] + 1, head[1]) if head else (1, auditlog.GENESIS_HASH)
    fields = {
        "seq": seq,
        "kind": "settings_changed",
        "created_at": timezone.now(),
        "workspace_id": workspace.pk,
        "actor_id": None,
        "actor_name": ACTOR_NAME,
        "attempt_id": None,
        "experiment_id": "",
        "experiment_name": "",
        "payload": auditlog.canonical_json(payload),
        "prev_hash": prev_hash,
    }
    AuditEntry.objects.create(**fields, hash=auditlog.entry_hash(**fields))


def record_settings_as_found(apps, schema_editor):
    Workspace = apps.get_model("experiments", "Workspace")
    AuditEntry = apps.get_model("experiments", "AuditEntry")
    defaults = {"webhook": "", "email_bookmarkers": False, "requires_approval": False, "approval_window_hours": 24}
    for workspace in Workspace.objects.order_by("id"):
        changes = []
        window = min(max(workspace.approval_window_hours, WINDOW_MIN), WINDOW_MAX)
        if window != workspace.approval_window_hours:
            changes.append(
                f"approval window {workspace.approval_window_hours} h → {window} h "
                f"(outside {WINDOW_MIN} to {WINDOW_MAX} h, which the database now refuses)"
            )
            Workspace.objects.filter(pk=workspace.pk).update(approval_window_hours=window)
            workspace.approval_window_hours = window
        last = AuditEntry.objects.filter(workspace_id=workspace.pk, kind="settings_changed").order_by("-seq").first()
        chained = dict(defaults)
        if last is not None:
            recorded = json.loads(last.payload or "{}").get("settings")
            chained.update(recorded if isinstance(recorded, dict) else {})
        found = _settings(workspace)
        differ = [
            f"{name}: {chained.get(name)!r} → {value!r}" for name, value in found.items() if chained.get(name) != value
        ]
        if not changes and not differ:
            continue
        if differ:
            changes.append("settings recorded as found, changed without an audit entry: " + "; ".join(differ))
        _append(
            AuditEntry, schema_editor.connection, workspace, {"changes": changes, "loosened": [], "settings": found}
        )


class Migration(migrations.Migration):
    # The rows are brought into range and committed before the table is altered: PostgreSQL
    # refuses to alter a table with row changes pending in the same transaction.
    atomic = False

    dependencies = [
        ("experiments", "0013_force_conclude_and_controls"),
    ]

    operations = [
        # Turning approval off waits out a delay; conclusions made while it is off say since when.
        migrations.AddField(
            model_name="workspace",
            name="approval_off_at",
            field=models.DateTimeField(blank=True, editable=False, null=True),
        ),
        migrations.AddField(
            model_name="conclusionattempt",
            name="approval_off_since",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.RunPython(record_settings_as_found, migrations.RunPython.noop, atomic=True),
        migrations.AlterField(
            model_name="workspace",
            name="approval_window_hours",
            field=models.PositiveSmallIntegerField(
                default=24,
                help_text="How long a request waits for approval before it expires (1 to 168 hours).",
                validators=[
                    django.core.validators.MinValueValidator(1),
                    django.core.validators.MaxValueValidator(168),
                ],
            ),
        ),
        migrations.AddConstraint(
            model_name="workspace",
            constraint=models.CheckConstraint(
                condition=models.Q(("approval_window_hours__gte", 1), ("approval_window_hours__lte", 168)),
                name="workspace_approval_window_1_to_168_hours",
            ),
        ),
        # A delivery is claimed ("sending") while one run sends it; the workers' sweep finds the
        # unfinished ones nothing moves on any more.
        migrations.AlterField(
            model_name="notificationdelivery",
            name="state",
            field=models.CharField(
                choices=[
                    ("pending", "Pending"),
                    ("sending", "Sending"),
                    ("sent", "Sent"),
                    ("failed", "Failed, will retry"),
                    ("gave_up", "Gave up"),
                ],
                default="pending",
                max_length=10,
            ),
        ),
        migrations.AddIndex(
            model_name="notificationdelivery",
            index=models.Index(
                condition=models.Q(("state__in", ["sent", "gave_up"]), _negated=True),
                fields=["updated_at"],
                name="delivery_open_idx",
            ),
        ),
    ]
