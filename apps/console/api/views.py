"""The console's API: health (anyone), metrics (operators or the scrape token), the kill switch (operators)."""

import hmac

from django.conf import settings
from django.http import HttpResponse
from drf_spectacular.utils import extend_schema, inline_serializer
from prometheus_client import CONTENT_TYPE_LATEST
from rest_framework import serializers
from rest_framework.permissions import AllowAny, BasePermission
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.accounts.permissions import HiddenFromNonOperators, IsOperator
from apps.console import emergency, health, metrics
from apps.evaluations import killswitch


class LivenessView(APIView):
    """Liveness: the web process answers (for a load balancer or an orchestrator's restart policy).
    It checks nothing else: a worker briefly away or Redis restarting is no reason to drop the web
    tier; readiness (``HealthView``) says whether work can be taken. Under Daphne, plain probes of
    both are answered before Django (``apps.console.probes``), the same way."""

    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(responses=inline_serializer("Liveness", {"status": serializers.ChoiceField(["ok"])}))
    def get(self, request):
        return Response({"status": "ok"})


class HealthView(APIView):
    """Readiness: 200 when every dependency is ok (work can be taken), 503 naming the ones that are not."""

    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(
        responses=inline_serializer(
            "Health",
            {
                "status": serializers.ChoiceField(["ok", "degraded"]),
                "checks": serializers.DictField(child=serializers.ChoiceField(["ok", "failing"])),
                "sandbox_runtime": inline_serializer(
                    "SandboxRuntime",
                    {
                        "configured": serializers.CharField(),
                        "chosen": serializers.CharField(allow_null=True),
                        "gvisor": serializers.BooleanField(),
                        "available": serializers.ListField(child=serializers.CharField()),
                    },
                ),
            },
        )
    )
    def get(self, request):
        status, body = health.report()
        response = Response(body, status=status)
        response["Cache-Control"] = "no-store"
        return response


# --- Metrics, kill switch ------------------------------------------------------------------


def _bearer(request) -> str | None:
    parts = request.META.get("HTTP_AUTHORIZATION", "").split()
    if len(parts) == 2 and parts[0].lower() == "bearer":
        return parts[1]
    return None


class IsOperatorOrScrapeToken(BasePermission):
    """An operator (session or personal token), or a scraper with ``Authorization: Bearer <METRICS_TOKEN>``."""

    def has_permission(self, request, view):
        token = _bearer(request)
        if token is not None and settings.METRICS_TOKEN:
            return hmac.compare_digest(token.encode(), settings.METRICS_TOKEN.encode())
        return IsOperator().has_permission(request, view)


class MetricsView(APIView):
    """Prometheus text format, computed from PostgreSQL and Redis at scrape time (see console.metrics)."""

    permission_classes = [IsOperatorOrScrapeToken]

    @extend_schema(responses={(200, "text/plain"): str})
    def get(self, request):
        response = HttpResponse(metrics.render(), content_type=CONTENT_TYPE_LATEST)
        response["Cache-Control"] = "no-store"
        return response


class KillSwitchSerializer(serializers.Serializer):
    engaged = serializers.BooleanField()


KILL_SWITCH_STATE = inline_serializer(
    "KillSwitchState",
    {
        "engaged": serializers.BooleanField(),
        "running": serializers.IntegerField(),
        "queued": serializers.IntegerField(),
        "stopped": serializers.ListField(
            child=serializers.UUIDField(), required=False, help_text="ids of the evaluations stopped by this engage"
        ),
        "sessions_ended": serializers.ListField(
            child=serializers.UUIDField(), required=False, help_text="ids of the sessions ended by this engage"
        ),
    },
)


class KillSwitchView(HiddenFromNonOperators, APIView):
    """GET the kill switch's state; POST ``{"engaged": true}`` to stop everything and pause the queues,
    ``{"engaged": false}`` to resume. Operators only; everyone else gets 404 (it does not exist for them)."""

    permission_classes = [IsOperator]

    @extend_schema(responses=KILL_SWITCH_STATE)
    def get(self, request):
        return Response(killswitch.state())

    @extend_schema(request=KillSwitchSerializer, responses=KILL_SWITCH_STATE)
    def post(self, request):
        serializer = KillSwitchSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        body = {}
        if serializer.validated_data["engaged"]:
            engaged = emergency.engage(request.user, request)
            body = {"stopped": engaged.stopped, "sessions_ended": engaged.sessions_ended}
        else:
            killswitch.release(request.user, request)
        return Response({**killswitch.state(), **body})
