"""AuditEvent moves here from monitoring. State only: the table (``monitoring_auditevent``) and its
rows stay where they are. The content type moves with it, so permissions already granted on the
model (the Operators group's "view") and admin log entries keep pointing at it."""

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models


def adopt_content_type(apps, schema_editor):
    _move_content_type(apps, schema_editor, "monitoring", "audit")


def return_content_type(apps, schema_editor):
    _move_content_type(apps, schema_editor, "audit", "monitoring")


def _move_content_type(apps, schema_editor, old: str, new: str) -> None:
    content_types = apps.get_model("contenttypes", "ContentType").objects.using(schema_editor.connection.alias)
    if not content_types.filter(app_label=new, model="auditevent").exists():
        content_types.filter(app_label=old, model="auditevent").update(app_label=new)


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("monitoring", "0001_initial"),
        ("contenttypes", "0002_remove_content_type_name"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="AuditEvent",
                    fields=[
                        ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                        ("created_at", models.DateTimeField(db_index=True, default=django.utils.timezone.now, editable=False)),
                        ("actor_name", models.CharField(blank=True, editable=False, max_length=150)),
                        ("action", models.CharField(db_index=True, editable=False, max_length=64)),
                        ("target", models.CharField(blank=True, db_index=True, editable=False, max_length=200)),
                        ("source_ip", models.GenericIPAddressField(blank=True, editable=False, null=True)),
                        ("details", models.JSONField(blank=True, default=dict, editable=False)),
                        (
                            "actor",
                            models.ForeignKey(
                                blank=True,
                                editable=False,
                                null=True,
                                on_delete=django.db.models.deletion.SET_NULL,
                                related_name="+",
                                to=settings.AUTH_USER_MODEL,
                            ),
                        ),
                    ],
                    options={
                        "db_table": "monitoring_auditevent",
                        "ordering": ["-created_at"],
                        "indexes": [models.Index(fields=["actor", "-created_at"], name="monitoring__actor_i_182530_idx")],
                    },
                ),
            ],
            database_operations=[],
        ),
        migrations.RunPython(adopt_content_type, return_content_type),
    ]
