"""Signal handlers: role bookkeeping and the audit trail of security events.

Roles: new users join Researchers, staff are kept in Operators, and Operators get their permissions
after every ``migrate``. Audited: sign-in (success and failure), sign-out, sign-up, group membership
changes and staff/superuser changes. The acting user comes from the request being served
(``crucible.middleware.current_request``), so a change made in the admin names the operator who made it.
"""

from __future__ import annotations

import contextvars
import logging

from allauth.account.signals import password_reset, user_signed_up
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.db.models.signals import m2m_changed, post_migrate, post_save, pre_save
from django.dispatch import receiver

from apps.accounts import throttle
from apps.accounts.roles import OPERATOR_APP_LABELS, OPERATORS_GROUP, RESEARCHERS_GROUP, ensure_groups
from apps.audit import services as audit
from crucible.middleware import current_request

log = logging.getLogger(__name__)
User = get_user_model()

# Set while we change memberships ourselves (joining Researchers on creation), which is not a role change
# anyone made and would only add noise to the audit trail.
_automatic = contextvars.ContextVar("crucible_automatic_role_change", default=False)


def _request(request=None):
    return request if request is not None else current_request()


def _actor(request):
    user = getattr(request, "user", None) if request is not None else None
    return user if getattr(user, "is_authenticated", False) else None


# --- Sign-in, sign-out, sign-up -----------------------------------------------------------


@receiver(user_logged_in, dispatch_uid="accounts_audit_login")
def audit_login(sender, request, user, **kwargs):
    audit.record("auth.login", actor=user, target=f"user:{user.pk}", request=request)


@receiver(user_login_failed, dispatch_uid="accounts_audit_login_failed")
def audit_login_failed(sender, credentials, request=None, **kwargs):
    # Django has already masked the password in ``credentials``; keep only the name that was tried.
    tried = credentials.get("username") or credentials.get("email") or credentials.get("login") or ""
    audit.record("auth.login_failed", target=f"login:{str(tried)[:150]}", request=_request(request))


@receiver(user_login_failed, dispatch_uid="accounts_throttle_login_failed")
def count_failed_sign_in(sender, credentials, request=None, **kwargs):
    """Every failed password sign-in (allauth's pages, the admin, anything calling authenticate()) counts."""
    request = _request(request)
    if request is None:
        return
    tried = credentials.get("username") or credentials.get("email") or credentials.get("login") or ""
    throttle.record_failure(throttle.client_address(request), str(tried), throttle.device_of(request))


@receiver(user_logged_in, dispatch_uid="accounts_throttle_login")
def remember_sign_in_address(sender, request, user, **kwargs):
    throttle.record_success(throttle.client_address(request), user, throttle.device_of(request))


@receiver(password_reset, dispatch_uid="accounts_throttle_password_reset")
def lift_sign_in_locks(sender, request, user, **kwargs):
    """Resetting the password proves the owner holds the account's email: every lock on it lifts."""
    throttle.forgive_account(user)


@receiver(user_logged_out, dispatch_uid="accounts_audit_logout")
def audit_logout(sender, request, user, **kwargs):
    if user is not None:
        audit.record("auth.logout", actor=user, target=f"user:{user.pk}", request=request)


@receiver(user_signed_up, dispatch_uid="accounts_signed_up")
def signed_up(sender, request, user, **kwargs):
    join_group(user, RESEARCHERS_GROUP)  # already done on creation; kept for users created before the group
    audit.record("account.signup", actor=user, target=f"user:{user.pk}", request=request)


# --- Roles ----------------------------------------------------------------------------------


@receiver(post_migrate, dispatch_uid="accounts_sync_operator_permissions")
def grant_operator_permissions(sender, **kwargs):
    """Each app's permissions are created in its own post_migrate; give Operators theirs right after."""
    if sender.label in OPERATOR_APP_LABELS:
        ensure_groups()


def join_group(user, name: str) -> None:
    group, _ = Group.objects.get_or_create(name=name)
    token = _automatic.set(True)
    try:
        user.groups.add(group)
    finally:
        _automatic.reset(token)


def leave_group(user, name: str) -> None:
    group = Group.objects.filter(name=name).first()
    if group is None:
        return
    token = _automatic.set(True)
    try:
        user.groups.remove(group)
    finally:
        _automatic.reset(token)


@receiver(pre_save, sender=User, dispatch_uid="accounts_remember_staff")
def remember_privileges(sender, instance, update_fields=None, raw=False, **kwargs):
    """Note whether is_staff/is_superuser change in this save (the login's last_login save is skipped)."""
    instance._crucible_privilege_changes = {}
    if raw or instance.pk is None:
        return
    if update_fields is not None and not {"is_staff", "is_superuser"} & set(update_fields):
        return
    before = User.objects.filter(pk=instance.pk).values("is_staff", "is_superuser").first()
    if before is None:
        return
    instance._crucible_privilege_changes = {
        field: (before[field], getattr(instance, field))
        for field in ("is_staff", "is_superuser")
        if before[field] != getattr(instance, field)
    }


@receiver(post_save, sender=User, dispatch_uid="accounts_roles_on_save")
def roles_on_save(sender, instance, created, raw=False, **kwargs):
    """New users are researchers; staff users are kept in Operators; privilege changes are audited."""
    if raw:
        return
    if created:
        join_group(instance, RESEARCHERS_GROUP)
        if instance.is_staff:
            join_group(instance, OPERATORS_GROUP)
        if instance.is_staff or instance.is_superuser:
            request = current_request()
            audit.record(
                "role.created_privileged",
                actor=_actor(request),
                target=f"user:{instance.pk}",
                request=request,
                username=instance.get_username(),
                is_staff=instance.is_staff,
                is_superuser=instance.is_superuser,
            )
        return
    changes = getattr(instance, "_crucible_privilege_changes", None) or {}
    if not changes:
        return
    request = current_request()
    for field, (old, new) in changes.items():
        audit.record(
            f"role.{field}_{'granted' if new else 'revoked'}",
            actor=_actor(request),
            target=f"user:{instance.pk}",
            request=request,
            username=instance.get_username(),
            field=field,
            old=old,
            new=new,
        )
    if "is_staff" in changes:
        (join_group if instance.is_staff else leave_group)(instance, OPERATORS_GROUP)
    instance._crucible_privilege_changes = {}


@receiver(m2m_changed, sender=User.groups.through, dispatch_uid="accounts_audit_groups")
def audit_group_membership(sender, instance, action, reverse, model, pk_set, **kwargs):
    """Audit group changes made from either side (user.groups.add(...) or group.user_set.add(...))."""
    if _automatic.get() or action not in ("post_add", "post_remove", "pre_clear"):
        return
    if action == "pre_clear":
        # After the clear we could no longer say who lost what; record it now.
        if reverse:
            pairs = [(user, instance) for user in instance.user_set.all()]
        else:
            pairs = [(instance, group) for group in instance.groups.all()]
        verb = "removed"
    else:
        if not pk_set:
            return
        if reverse:  # instance is a Group, pk_set holds users
            pairs = [(user, instance) for user in User.objects.filter(pk__in=pk_set)]
        else:
            pairs = [(instance, group) for group in Group.objects.filter(pk__in=pk_set)]
        verb = "added" if action == "post_add" else "removed"
    request = current_request()
    for user, group in pairs:
        audit.record(
            f"role.group_{verb}",
            actor=_actor(request),
            target=f"user:{user.pk}",
            request=request,
            username=user.get_username(),
            group=group.name,
        )
