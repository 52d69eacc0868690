"""AuditEvent now belongs to the audit app (apps/audit/migrations/0001_initial.py). State only:
the table stays, under its old name, owned by audit from here on."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("monitoring", "0003_default_safety_rules"),
        ("audit", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name="AuditEvent")],
            database_operations=[],
        ),
    ]
