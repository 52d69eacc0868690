"""Who may use the operator console: one definition for pages (``operator_required``) and the API (``IsOperator``).

Both answer "no such thing" to a signed-in user who is not an operator (404, never 403), so the
console's pages and endpoints do not exist for researchers; anonymous visitors are sent to sign in
(pages) or get 401/403 (API).
"""

from __future__ import annotations

import functools

from django.contrib.auth.decorators import login_required
from django.http import Http404
from rest_framework.permissions import BasePermission

from apps.accounts.roles import is_operator

__all__ = ["IsOperator", "is_operator", "operator_required"]


def operator_required(view):
    """Decorate a page view: anonymous visitors sign in first; non-operators get 404."""

    @login_required
    @functools.wraps(view)
    def wrapped(request, *args, **kwargs):
        if not is_operator(request.user):
            raise Http404
        return view(request, *args, **kwargs)

    return wrapped


class IsOperator(BasePermission):
    """DRF permission: staff or a member of the Operators group."""

    def has_permission(self, request, view):
        return is_operator(request.user)


class HiddenFromNonOperators:
    """APIView mixin: a signed-in non-operator is told the endpoint does not exist (404)."""

    def permission_denied(self, request, message=None, code=None):
        if request.user and request.user.is_authenticated:
            raise Http404
        super().permission_denied(request, message, code)
