# The conclusion action is called what its button says: "Force conclude". Choices live
# in Django only, so this changes no table.

from django.db import migrations, models

ACTION_CHOICES = [("conclusion", "Force conclude"), ("decision", "Decision")]


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
    ]
