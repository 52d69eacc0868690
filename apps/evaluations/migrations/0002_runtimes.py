from django.db import migrations

# The runtimes of this migration's time (python and bash on SANDBOX_IMAGE); later runtimes are
# added by 0008_compiled_runtimes from the repository's definitions.
RUNTIMES = [
    {"name": "python", "command": ["python3", "-u", "{file}"], "file_name": "main.py"},
    {"name": "bash", "command": ["bash", "{file}"], "file_name": "main.sh"},
]


def add_runtimes(apps, schema_editor):
    runtime_model = apps.get_model("evaluations", "Runtime")
    for runtime in RUNTIMES:
        runtime_model.objects.get_or_create(name=runtime["name"], defaults=runtime)


class Migration(migrations.Migration):
    dependencies = [("evaluations", "0001_initial")]

    operations = [migrations.RunPython(add_runtimes, migrations.RunPython.noop)]
