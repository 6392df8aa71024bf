"""The database itself refuses UPDATE and DELETE on the audit table."""

from __future__ import annotations

from django.db import migrations

from experiments import db_triggers


def install(apps, schema_editor):
    db_triggers.install(schema_editor.connection)


def drop(apps, schema_editor):
    db_triggers.drop(schema_editor.connection)


class Migration(migrations.Migration):
    dependencies = [("experiments", "0001_initial")]
    operations = [migrations.RunPython(install, drop)]
