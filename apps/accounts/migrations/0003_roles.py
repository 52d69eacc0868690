"""Create the Researchers and Operators groups; Operators' permissions are (re)granted after every migrate."""

from django.db import migrations


def create_groups(apps, schema_editor):
    from apps.accounts.roles import ensure_groups

    ensure_groups(apps.get_model("auth", "Group"), apps.get_model("auth", "Permission"))


def put_existing_users_in_groups(apps, schema_editor):
    from apps.accounts.roles import OPERATORS_GROUP, RESEARCHERS_GROUP

    Group = apps.get_model("auth", "Group")
    User = apps.get_model("auth", "User")
    researchers = Group.objects.get(name=RESEARCHERS_GROUP)
    operators = Group.objects.get(name=OPERATORS_GROUP)
    for user in User.objects.all():
        user.groups.add(researchers)
        if user.is_staff:
            user.groups.add(operators)


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0002_quota"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.RunPython(create_groups, migrations.RunPython.noop),
        migrations.RunPython(put_existing_users_in_groups, migrations.RunPython.noop),
    ]
