from django.db import migrations

RUNTIMES = [
    {"name": "python", "command": ["python3", "-u", "{file}"], "file_name": "main.py"},
    {"name": "bash", "command": ["bash", "{file}"], "file_name": "main.sh"},
]


def add_runtimes(apps, schema_editor):
    Runtime = apps.get_model("evaluations", "Runtime")
    for runtime in RUNTIMES:
        Runtime.objects.get_or_create(name=runtime["name"], defaults=runtime)


class Migration(migrations.Migration):
    dependencies = [("evaluations", "0001_initial")]

    operations = [migrations.RunPython(add_runtimes, migrations.RunPython.noop)]
