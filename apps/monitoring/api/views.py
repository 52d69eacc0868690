from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.monitoring import health


class HealthView(APIView):
    """Liveness and readiness: 200 when every dependency is ok, 503 naming the ones that are not."""

    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(
        responses=inline_serializer(
            "Health",
            {
                "status": serializers.ChoiceField(["ok", "degraded"]),
                "checks": serializers.DictField(child=serializers.ChoiceField(["ok", "failing"])),
            },
        )
    )
    def get(self, request):
        results = health.report()
        healthy = all(results.values())
        body = {
            "status": "ok" if healthy else "degraded",
            "checks": {name: "ok" if ok else "failing" for name, ok in results.items()},
        }
        if not healthy:
            body["failing"] = sorted(name for name, ok in results.items() if not ok)
        response = Response(body, status=200 if healthy else 503)
        response["Cache-Control"] = "no-store"
        return response
