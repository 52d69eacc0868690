from django.db import migrations


def seed(apps, schema_editor):
    from apps.monitoring.rules import ensure_default_rules

    ensure_default_rules(apps.get_model("monitoring", "SafetyRule"))


class Migration(migrations.Migration):
    dependencies = [("monitoring", "0002_samples_rules_alerts")]

    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
