from dataclasses import asdict

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.accounts.models import ApiToken
from apps.accounts.quotas import limits_for
from apps.accounts.roles import is_operator


class MeView(APIView):
    """Who the caller is: username, role, the limits that apply, and how they authenticated (with the
    token's name, prefix and expiry, null when it never expires)."""

    @extend_schema(
        responses=inline_serializer(
            "Me",
            {
                "username": serializers.CharField(),
                "email": serializers.EmailField(),
                "is_operator": serializers.BooleanField(),
                "groups": serializers.ListField(child=serializers.CharField()),
                "limits": serializers.DictField(),
                "auth": serializers.ChoiceField(["token", "session"]),
                "token": serializers.DictField(allow_null=True),
            },
        )
    )
    def get(self, request):
        user = request.user
        token = request.auth if isinstance(request.auth, ApiToken) else None
        return Response(
            {
                "username": user.get_username(),
                "email": user.email,
                "is_operator": is_operator(user),
                "groups": sorted(user.groups.values_list("name", flat=True)),
                "limits": asdict(limits_for(user)),
                "auth": "token" if token else "session",
                "token": {"name": token.name, "prefix": token.prefix, "expires_at": token.expires_at}
                if token
                else None,
            }
        )
