from dataclasses import asdict

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.accounts import services
from apps.accounts.models import ApiToken, WebhookSecret
from apps.accounts.quotas import limits_for
from apps.accounts.roles import is_operator


class MeView(APIView):
    """Who the caller is: username, role, the limits that apply, how they authenticated (with the
    token's name, prefix and expiry, null when it never expires), and whether they have a webhook secret
    (never the secret itself)."""

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
                "webhook_secret_set": serializers.BooleanField(),
                "webhook_secret_created_at": serializers.DateTimeField(allow_null=True),
            },
        )
    )
    def get(self, request):
        user = request.user
        token = request.auth if isinstance(request.auth, ApiToken) else None
        secret_made = WebhookSecret.objects.filter(user=user).values_list("created_at", flat=True).first()
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
                "webhook_secret_set": secret_made is not None,
                "webhook_secret_created_at": secret_made,
            }
        )


class WebhookSecretView(APIView):
    """Make a new webhook secret: completion callbacks are signed with it from now on
    (``X-Crucible-Signature: sha256=<hex HMAC-SHA256 of the raw body>``). The answer is the only time it
    is shown; the old secret stops at once."""

    @extend_schema(
        request=None,
        responses={201: inline_serializer("WebhookSecret", {"webhook_secret": serializers.CharField()})},
    )
    def post(self, request):
        secret = services.make_webhook_secret(request.user, request=request)
        response = Response({"webhook_secret": secret}, status=status.HTTP_201_CREATED)
        response["Cache-Control"] = "no-store"
        return response
