"""The evaluations API (v1). Views stay thin: they parse, call services, and shape responses."""

from __future__ import annotations

import re

from django.conf import settings
from django.db.models import OuterRef, Subquery
from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import generics, serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.accounts.roles import is_operator
from apps.evaluations import services
from apps.evaluations.api.serializers import (
    ArtifactSerializer,
    CallbackDeliverySerializer,
    EvaluationDetailSerializer,
    EvaluationSerializer,
    ResultsSerializer,
    SubmissionSerializer,
)
from apps.evaluations.models import CallbackDelivery, Evaluation, Status
from apps.evaluations.validation import SubmissionInvalid, SubmissionTooLarge
from apps.monitoring import incidents
from apps.monitoring.models import Incident, ResourceSample

LOG_PAGE_CHUNKS = 1000
AFTER = re.compile(r"[0-9]{1,12}")  # ASCII digits only: str.isdigit() also accepts "²" and "①"


def parse_after(raw: str) -> int:
    """The ``after`` query parameter as a ``seq``; a 400 naming it for anything but 1 to 12 ASCII digits."""
    if not AFTER.fullmatch(raw):
        raise ValidationError({"after": ["Must be a non-negative integer (ASCII digits, at most 12)."]})
    return int(raw)


def error_response(message: str, code: int, **extra) -> Response:
    return Response({"detail": message, "error": message, **extra}, status=code)


def throttled_response(exc: services.Throttled) -> Response:
    response = error_response(exc.message, status.HTTP_429_TOO_MANY_REQUESTS, retry_after=exc.retry_after)
    response["Retry-After"] = str(exc.retry_after)
    return response


class VisibleEvaluationMixin:
    """Another user's evaluation is a 404 everywhere, exactly as if it did not exist."""

    def get_evaluation(self, pk) -> Evaluation:
        return get_object_or_404(Evaluation.objects.visible_to(self.request.user).select_related("owner"), pk=pk)


class EvaluationListCreateView(generics.ListAPIView):
    serializer_class = EvaluationSerializer

    @extend_schema(
        parameters=[
            OpenApiParameter("status", str, enum=Status.values, description="only evaluations in this status"),
            OpenApiParameter("q", str, description="search id, language, code and metadata text"),
        ]
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        queryset = Evaluation.objects.visible_to(self.request.user).select_related("owner").defer("code", "stdin")
        # The incident's id in the same query (the list's cost stays fixed).
        queryset = queryset.annotate(
            incident_pk=Subquery(Incident.objects.filter(evaluation_id=OuterRef("pk")).values("pk")[:1])
        )
        wanted = self.request.query_params.get("status")
        if wanted:
            if wanted not in Status.values:
                raise ValidationError({"status": [f"Unknown status; choose one of: {', '.join(Status.values)}."]})
            queryset = queryset.filter(status=wanted)
        return queryset.search(self.request.query_params.get("q", "")).order_by("-created_at")

    @extend_schema(
        request=SubmissionSerializer,
        responses={
            201: EvaluationDetailSerializer,
            200: EvaluationDetailSerializer,
            400: OpenApiResponse(description="invalid input: field errors, each naming its field"),
            403: OpenApiResponse(description="priority high without the role or quota for it; names the field"),
            409: OpenApiResponse(description="the Idempotency-Key was used with another body"),
            413: OpenApiResponse(description="code, stdin or the body is too large"),
            429: OpenApiResponse(description="over a quota or the queue is full; see Retry-After"),
        },
        parameters=[OpenApiParameter("Idempotency-Key", str, OpenApiParameter.HEADER)],
    )
    def post(self, request, *args, **kwargs):
        length = request.META.get("CONTENT_LENGTH") or "0"
        if length.isdigit() and int(length) > settings.DATA_UPLOAD_MAX_MEMORY_SIZE:
            return error_response(f"Request body over {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes.", 413)
        try:
            evaluation, created = services.submit(
                request.user,
                request.data,
                idempotency_key=request.headers.get("Idempotency-Key", ""),
                request=request,
            )
        except SubmissionTooLarge as exc:
            return error_response(f"Too large: {exc}.", status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
        except SubmissionInvalid as exc:
            return Response(exc.errors, status=status.HTTP_400_BAD_REQUEST)
        except services.PriorityNotAllowed as exc:
            return error_response(exc.message, status.HTTP_403_FORBIDDEN, **{exc.field: [exc.message]})
        except services.IdempotencyConflict as exc:
            return error_response(str(exc), status.HTTP_409_CONFLICT)
        except services.Throttled as exc:
            return throttled_response(exc)
        body = EvaluationDetailSerializer(evaluation).data
        return Response(body, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


class EvaluationDetailView(VisibleEvaluationMixin, APIView):
    @extend_schema(responses=EvaluationDetailSerializer)
    def get(self, request, pk):
        return Response(EvaluationDetailSerializer(self.get_evaluation(pk)).data)

    @extend_schema(responses={202: EvaluationSerializer})
    def delete(self, request, pk):
        evaluation = services.cancel(self.get_evaluation(pk), actor=request.user, request=request)
        return Response(EvaluationSerializer(evaluation).data, status=status.HTTP_202_ACCEPTED)


class EvaluationStopView(VisibleEvaluationMixin, APIView):
    @extend_schema(request=None, responses={202: EvaluationSerializer})
    def post(self, request, pk):
        evaluation = services.stop(self.get_evaluation(pk), actor=request.user, request=request)
        return Response(EvaluationSerializer(evaluation).data, status=status.HTTP_202_ACCEPTED)


class EvaluationLogsView(VisibleEvaluationMixin, APIView):
    @extend_schema(
        parameters=[OpenApiParameter("after", int, description="return chunks with seq > after")],
        responses=inline_serializer(
            "EvaluationLogs",
            {
                "chunks": inline_serializer(
                    "OutputChunk",
                    {
                        "seq": serializers.IntegerField(),
                        "stream": serializers.ChoiceField(["stdout", "stderr"]),
                        "data": serializers.CharField(),
                        "ts": serializers.DateTimeField(),
                    },
                    many=True,
                ),
                "next": serializers.IntegerField(),
                "complete": serializers.BooleanField(),
            },
        ),
    )
    def get(self, request, pk):
        evaluation = self.get_evaluation(pk)
        after = parse_after(request.query_params.get("after", "0"))
        # Read the status before the chunks: if it was terminal then, every chunk is already stored.
        terminal = evaluation.is_terminal
        chunks = list(evaluation.chunks.filter(seq__gt=after).order_by("seq")[: LOG_PAGE_CHUNKS + 1])
        more = len(chunks) > LOG_PAGE_CHUNKS
        chunks = chunks[:LOG_PAGE_CHUNKS]
        return Response(
            {
                "chunks": [{"seq": c.seq, "stream": c.stream, "data": c.text, "ts": c.created_at} for c in chunks],
                "next": chunks[-1].seq if chunks else after,
                "complete": terminal and not more,
            }
        )


class EvaluationResultsView(VisibleEvaluationMixin, APIView):
    @extend_schema(responses=ResultsSerializer)
    def get(self, request, pk):
        evaluation = self.get_evaluation(pk)
        may_see_tests = not evaluation.tests_hidden or is_operator(request.user)
        return Response(ResultsSerializer(evaluation, context={"may_see_tests": may_see_tests}).data)


class ArtifactListView(VisibleEvaluationMixin, APIView):
    @extend_schema(responses=ArtifactSerializer(many=True))
    def get(self, request, pk):
        evaluation = self.get_evaluation(pk)
        artifacts = evaluation.artifacts.defer("data").order_by("name")
        return Response(ArtifactSerializer(artifacts, many=True).data)


class ArtifactDownloadView(VisibleEvaluationMixin, APIView):
    @extend_schema(
        parameters=[
            OpenApiParameter(
                "quarantine", str, description="release-ack: an operator downloads a quarantined artifact (audited)"
            )
        ],
        responses={(200, "application/octet-stream"): bytes, 403: OpenApiResponse(description="quarantined")},
    )
    def get(self, request, pk, name):
        evaluation = self.get_evaluation(pk)
        artifact = get_object_or_404(evaluation.artifacts, name=name)
        refusal = incidents.quarantine_refusal(
            evaluation_id=evaluation.pk,
            user=request.user,
            operator=is_operator(request.user),
            ack=request.query_params.get("quarantine", ""),
            what=f"artifact {artifact.name} of evaluation {evaluation.pk}",
            request=request,
        )
        if refusal is not None:
            return Response(refusal, status=status.HTTP_403_FORBIDDEN)
        response = HttpResponse(bytes(artifact.data), content_type="application/octet-stream")
        safe_name = "".join(c if c.isalnum() or c in "._-" else "_" for c in artifact.name.rsplit("/", 1)[-1])
        response["Content-Disposition"] = f'attachment; filename="{safe_name or "artifact"}"'
        response["X-Content-Type-Options"] = "nosniff"
        response["Content-Security-Policy"] = "default-src 'none'; sandbox"
        response["ETag"] = f'"{artifact.sha256}"'
        return response


class EvaluationSamplesView(VisibleEvaluationMixin, APIView):
    """The stored resource samples of one evaluation, oldest first (what the resource graph draws)."""

    MAX_SAMPLES = 3600

    @extend_schema(
        responses=inline_serializer(
            "EvaluationSamples",
            {
                "limits": serializers.DictField(child=serializers.FloatField()),
                "samples": serializers.ListField(child=serializers.DictField()),
            },
        )
    )
    def get(self, request, pk):
        evaluation = self.get_evaluation(pk)
        samples = ResourceSample.objects.filter(evaluation_id=evaluation.pk).order_by("at")[: self.MAX_SAMPLES]
        return Response(
            {
                "limits": {
                    "memory_bytes": evaluation.memory_mb * 1024 * 1024,
                    "pids": evaluation.pids_limit,
                    "cpu_percent": evaluation.cpus * 100,
                },
                "samples": [s.as_message() for s in samples],
            }
        )


class EvaluationCallbacksView(VisibleEvaluationMixin, APIView):
    """The completion callbacks of one evaluation and every attempt to deliver them (its owner and
    operators only; anyone else gets 404, as for the evaluation itself)."""

    @extend_schema(responses=CallbackDeliverySerializer(many=True))
    def get(self, request, pk):
        evaluation = self.get_evaluation(pk)
        deliveries = (
            CallbackDelivery.objects.filter(owner_id=evaluation.owner_id, subject_id=str(evaluation.pk))
            .defer("body")
            .prefetch_related("attempt_log")
            .order_by("created_at")
        )
        return Response(CallbackDeliverySerializer(deliveries, many=True).data)
