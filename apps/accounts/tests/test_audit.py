"""Security events land in the audit trail: tokens, role changes; the admin shows it read-only."""

import pytest
from django.contrib.auth.models import Group

from apps.accounts.services import create_token, revoke_token
from apps.audit.models import AuditEvent

pytestmark = pytest.mark.django_db


def events(action):
    return AuditEvent.objects.filter(action=action)


def test_token_created_and_revoked_are_recorded_without_the_key(alice):
    token, key = create_token(alice, "laptop")
    revoke_token(token, actor=alice)
    created = events("token.created").get()
    revoked = events("token.revoked").get()
    assert created.actor == alice
    assert created.target == f"token:{token.pk}"
    assert created.details["name"] == "laptop"
    assert revoked.actor == alice
    assert key not in str(created.details) + str(revoked.details)


def test_revoking_twice_records_once(alice):
    token, _ = create_token(alice, "laptop")
    assert revoke_token(token, actor=alice) is True
    assert revoke_token(token, actor=alice) is False
    assert events("token.revoked").count() == 1


def test_token_pages_record_the_source_address(client, alice):
    client.force_login(alice)
    client.post("/api-tokens/", {"name": "ci"}, REMOTE_ADDR="192.0.2.7")
    assert events("token.created").get().source_ip == "192.0.2.7"


def test_group_changes_are_recorded_from_either_side(alice, bob):
    operators = Group.objects.get(name="Operators")
    alice.groups.add(operators)
    operators.user_set.add(bob)
    alice.groups.remove(operators)
    added = events("role.group_added").order_by("pk")
    assert [(e.details["username"], e.details["group"]) for e in added] == [
        ("alice", "Operators"),
        ("bob", "Operators"),
    ]
    removed = events("role.group_removed").get()
    assert removed.details == {"username": "alice", "group": "Operators"}


def test_joining_researchers_on_creation_is_not_noise(alice):
    assert not events("role.group_added").exists()


def test_staff_granted_and_revoked_are_recorded(bob):
    bob.is_staff = True
    bob.save()
    granted = events("role.is_staff_granted").get()
    assert granted.target == f"user:{bob.pk}"
    assert granted.details["new"] is True
    bob.is_staff = False
    bob.save()
    assert events("role.is_staff_revoked").exists()


def test_a_plain_save_or_a_sign_in_is_not_a_role_change(client, bob):
    bob.first_name = "Bob"
    bob.save()
    client.post("/accounts/login/", {"login": "bob", "password": "bob-password-1"})
    assert not AuditEvent.objects.filter(action__startswith="role.").exists()


def test_a_change_made_in_the_admin_names_the_operator(client, olivia, bob):
    client.force_login(olivia)
    # Operators may view users, not change them; a superuser grants staff.
    olivia.is_superuser = True
    olivia.save()
    page = client.get(f"/admin/auth/user/{bob.pk}/change/")
    form = page.context["adminform"].form
    data = {key: value for key, value in form.initial.items() if value is not None and key != "password"}
    data.update(
        {
            "is_staff": "on",
            "is_active": "on",
            "groups": [g.pk for g in bob.groups.all()],
            "date_joined_0": bob.date_joined.strftime("%Y-%m-%d"),
            "date_joined_1": bob.date_joined.strftime("%H:%M:%S"),
            "last_login_0": "",
            "last_login_1": "",
            "user_permissions": [],
        }
    )
    response = client.post(f"/admin/auth/user/{bob.pk}/change/", data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    granted = events("role.is_staff_granted").get()
    assert granted.actor == olivia
    assert granted.source_ip == "127.0.0.1"


def test_the_audit_admin_is_read_only_and_searchable(client, olivia, alice):
    create_token(alice, "laptop")
    client.force_login(olivia)
    listing = client.get("/admin/audit/auditevent/", {"q": "token.created"})
    assert listing.status_code == 200
    assert "token.created" in listing.content.decode()
    event = events("token.created").get()
    assert client.get("/admin/audit/auditevent/add/").status_code == 403
    detail = client.get(f"/admin/audit/auditevent/{event.pk}/change/")
    assert detail.status_code == 200  # view permission: a read-only page
    assert 'name="_save"' not in detail.content.decode()
    assert client.post(f"/admin/audit/auditevent/{event.pk}/delete/").status_code == 403


def test_the_token_admin_never_shows_the_hash_and_can_revoke(client, olivia, alice):
    token, _ = create_token(alice, "laptop")
    client.force_login(olivia)
    page = client.get(f"/admin/accounts/apitoken/{token.pk}/change/").content.decode()
    assert token.key_hash not in page
    response = client.post(
        "/admin/accounts/apitoken/", {"action": "revoke_selected", "_selected_action": [token.pk]}, follow=True
    )
    assert response.status_code == 200
    token.refresh_from_db()
    assert not token.is_active
    assert events("token.revoked").get().actor == olivia
