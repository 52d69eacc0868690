"""Roles are Django groups: Researchers for everyone, Operators for staff; is_operator decides "sees all"."""

import pytest
from django.contrib.auth.models import AnonymousUser, Group

from apps.accounts.roles import OPERATORS_GROUP, RESEARCHERS_GROUP, ensure_groups, is_operator

pytestmark = pytest.mark.django_db


def test_both_groups_exist_after_migrate():
    assert Group.objects.filter(name__in=[RESEARCHERS_GROUP, OPERATORS_GROUP]).count() == 2


def test_a_new_user_is_a_researcher_and_not_an_operator(alice):
    assert alice.groups.filter(name=RESEARCHERS_GROUP).exists()
    assert not is_operator(alice)


def test_staff_are_operators_and_in_the_group(olivia):
    assert is_operator(olivia)
    assert olivia.groups.filter(name=OPERATORS_GROUP).exists()


def test_a_member_of_operators_is_an_operator_without_staff(bob):
    bob.groups.add(Group.objects.get(name=OPERATORS_GROUP))
    assert is_operator(bob)


def test_anonymous_and_inactive_users_are_not_operators(olivia):
    assert not is_operator(AnonymousUser())
    assert not is_operator(None)
    olivia.is_active = False
    assert not is_operator(olivia)


def test_granting_and_removing_staff_keeps_the_group_in_step(bob):
    bob.is_staff = True
    bob.save()
    assert bob.groups.filter(name=OPERATORS_GROUP).exists()
    bob.is_staff = False
    bob.save()
    assert not bob.groups.filter(name=OPERATORS_GROUP).exists()
    assert not is_operator(bob)


def test_operators_get_the_admin_permissions_of_existing_apps(olivia):
    operators = Group.objects.get(name=OPERATORS_GROUP)
    codenames = set(operators.permissions.values_list("content_type__app_label", "codename"))
    assert ("accounts", "change_quota") in codenames
    assert ("accounts", "view_apitoken") in codenames
    assert ("audit", "view_auditevent") in codenames
    assert ("auth", "view_user") in codenames
    assert ("auth", "change_user") not in codenames  # no self-promotion to superuser
    olivia.refresh_from_db()
    assert olivia.has_perm("accounts.add_quota")
    assert olivia.has_perm("audit.view_auditevent")
    assert not olivia.has_perm("audit.change_auditevent")


def test_ensure_groups_is_idempotent():
    ensure_groups()
    count = Group.objects.get(name=OPERATORS_GROUP).permissions.count()
    ensure_groups()
    assert Group.objects.get(name=OPERATORS_GROUP).permissions.count() == count


def test_an_operator_can_open_the_admin_and_a_researcher_cannot(client, olivia, alice):
    client.force_login(olivia)
    assert client.get("/admin/").status_code == 200
    assert client.get("/admin/accounts/quota/").status_code == 200
    assert client.get("/admin/audit/auditevent/").status_code == 200
    client.force_login(alice)
    assert client.get("/admin/").status_code == 302
