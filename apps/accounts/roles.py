"""Roles as Django groups: researchers see and act on their own evaluations; operators see all.

An operator is a staff user or a member of the "Operators" group. Staff users are kept in the group
(``apps.accounts.signals``) so the group's permissions are what lets them use the admin. To give operators
the admin of a new app, add its label to ``OPERATOR_PERMISSIONS``; the Operators group gets its
permissions after every ``migrate`` (``signals.grant_operator_permissions``).
"""

from __future__ import annotations

from django.contrib.auth.models import Group, Permission
from django.db.models import Exists, OuterRef, QuerySet

RESEARCHERS_GROUP = "Researchers"
OPERATORS_GROUP = "Operators"

# app label (or "app_label.model") -> permission actions the Operators group gets on it.
# Not "auth": change_user would let an operator make themselves a superuser.
OPERATOR_PERMISSIONS: dict[str, tuple[str, ...]] = {
    "evaluations": ("view", "change"),
    "sandboxing": ("view", "change"),
    "sandbox_sessions": ("view",),  # read-only records; the admin's "end selected sessions" needs only this
    "audit": ("view",),
    "monitoring": ("view",),
    "monitoring.safetyrule": ("view", "add", "change", "delete"),  # operators configure the safety rules
    "monitoring.alert": ("view", "change"),  # and acknowledge alerts in the admin
    "accounts.quota": ("view", "add", "change", "delete"),
    "accounts.apitoken": ("view", "change"),
    "tasks.task": ("view", "add", "change"),  # operators publish and edit tasks in the admin
    "tasks.batch": ("view", "change"),  # and cancel batches (the change permission runs admin actions)
    "auth.user": ("view",),
    "auth.group": ("view",),
}
OPERATOR_APP_LABELS = frozenset(target.split(".")[0] for target in OPERATOR_PERMISSIONS)


# A user read with ``with_operator_flag`` carries whether it is in the Operators group, so that
# ``is_operator`` asks nothing more (a WebSocket's permission re-check reads it with the user).
IN_OPERATORS_GROUP = "in_operators_group"


def with_operator_flag(users: QuerySet) -> QuerySet:
    """``users``, each read with whether it is a member of the Operators group (one query for both)."""
    return users.annotate(
        **{IN_OPERATORS_GROUP: Exists(Group.objects.filter(name=OPERATORS_GROUP, user=OuterRef("pk")))}
    )


def is_operator(user) -> bool:
    """True for staff and members of the Operators group: they see and may stop everyone's evaluations."""
    if user is None or not getattr(user, "is_authenticated", False) or not user.is_active:
        return False
    if user.is_staff:
        return True
    member = getattr(user, IN_OPERATORS_GROUP, None)
    if member is not None:
        return bool(member)
    return user.groups.filter(name=OPERATORS_GROUP).exists()


def ensure_groups(group_model=None, permission_model=None) -> None:
    """Create both groups and give Operators the permissions in OPERATOR_PERMISSIONS (idempotent).

    Takes the models as arguments so a data migration can pass its historical models.
    """
    if group_model is None or permission_model is None:
        group_model, permission_model = Group, Permission
    group_model.objects.get_or_create(name=RESEARCHERS_GROUP)
    operators, _ = group_model.objects.get_or_create(name=OPERATORS_GROUP)
    wanted = []
    for target, actions in OPERATOR_PERMISSIONS.items():
        app_label, _, model = target.partition(".")
        perms = permission_model.objects.filter(content_type__app_label=app_label)
        if model:
            perms = perms.filter(content_type__model=model)
        for perm in perms:
            if perm.codename.split("_", 1)[0] in actions:
                wanted.append(perm)
    operators.permissions.add(*wanted)
