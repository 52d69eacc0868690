from django.db import migrations

from apps.evaluations.runtimes import ensure_default_runtimes


def add_runtimes(apps, schema_editor):
    ensure_default_runtimes(apps.get_model("evaluations", "Runtime"))


class Migration(migrations.Migration):
    dependencies = [("evaluations", "0001_initial")]

    operations = [migrations.RunPython(add_runtimes, migrations.RunPython.noop)]
