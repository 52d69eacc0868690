"""The evaluations API (v1). Views stay thin: they parse, call services, and shape responses."""

from __future__ import annotations

import re

from django.conf import settings
from django.db.models import OuterRef, Subquery
from django.http import Http404, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import generics, serializers, status
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.accounts.permissions import IsOperator
from apps.accounts.roles import is_operator
from apps.evaluations import artifact_files, builds, runtimes, services
from apps.evaluations.api.serializers import (
    ArtifactSerializer,
    CallbackDeliverySerializer,
    EvaluationDetailSerializer,
    EvaluationProgressSerializer,
    EvaluationSerializer,
    ResultsSerializer,
    SubmissionSerializer,
)
from apps.evaluations.listing import FiltersInvalid, parse_filters
from apps.evaluations.models import AmbiguousId, Artifact, CallbackDelivery, Evaluation, Runtime, Status, Stream
from apps.evaluations.validation import SubmissionInvalid, SubmissionTooLarge
from apps.monitoring import incidents
from apps.monitoring.models import Incident, ResourceSample

LOG_PAGE_CHUNKS = 1000
TEXT_STREAMS = {"stdout": [Stream.STDOUT], "stderr": [Stream.STDERR], "both": [Stream.STDOUT, Stream.STDERR]}
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
    """Another user's evaluation is a 404 everywhere, exactly as if it did not exist. ``pk`` is the full
    id or the short one the pages show (at least 8 characters); an ambiguous one is a 400."""

    def get_evaluation(self, pk) -> Evaluation:
        try:
            return Evaluation.objects.visible_to(self.request.user).select_related("owner").by_id(pk)
        except Evaluation.DoesNotExist:
            raise Http404 from None
        except AmbiguousId as exc:
            raise ValidationError({"detail": exc.message, "error": exc.message}) from None


class EvaluationListCreateView(generics.ListAPIView):
    serializer_class = EvaluationSerializer

    @extend_schema(
        parameters=[
            OpenApiParameter("status", str, enum=Status.values, description="only evaluations in this status"),
            OpenApiParameter("q", str, description="search id (a prefix), name, labels, language, code and metadata"),
            OpenApiParameter("language", str, description="only this language"),
            OpenApiParameter("label", str, description="only evaluations with this label"),
            OpenApiParameter("name", str, description="only evaluations whose name contains this (any case)"),
            OpenApiParameter("owner", str, description="only this user's (a username; operators see everyone's)"),
            OpenApiParameter(
                "created_after", str, description="created at or after: an ISO date (whole day, UTC) or date-time"
            ),
            OpenApiParameter(
                "created_before", str, description="created before: a date-time, or an ISO date (that day included)"
            ),
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
        try:
            return parse_filters(self.request.query_params, strict=True).apply(queryset)
        except FiltersInvalid as exc:
            raise ValidationError(exc.errors) from None

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
    @extend_schema(responses=EvaluationProgressSerializer)
    def get(self, request, pk):
        evaluation = self.get_evaluation(pk)
        return Response(EvaluationProgressSerializer(evaluation).data)

    @extend_schema(responses={202: EvaluationSerializer})
    def delete(self, request, pk):
        evaluation = services.cancel(self.get_evaluation(pk), actor=request.user, request=request)
        return Response(EvaluationSerializer(evaluation).data, status=status.HTTP_202_ACCEPTED)


class EvaluationStopView(VisibleEvaluationMixin, APIView):
    @extend_schema(request=None, responses={202: EvaluationSerializer})
    def post(self, request, pk):
        evaluation = services.stop(self.get_evaluation(pk), actor=request.user, request=request)
        return Response(EvaluationSerializer(evaluation).data, status=status.HTTP_202_ACCEPTED)


class PlainTextRenderer(BaseRenderer):
    """Lets content negotiation accept ``Accept: text/plain`` and ``?format=text`` (the view streams the body)."""

    media_type = "text/plain"
    format = "text"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        # Only errors (400/404) come through here; the log itself is a StreamingHttpResponse.
        if isinstance(data, dict):
            return "\n".join(f"{key}: {value}" for key, value in data.items()).encode()
        return str(data).encode()


def _text_chunks(evaluation: Evaluation, streams: list[str]):
    """The stored output bytes of ``streams``, in order, read a page of chunks at a time."""
    after = 0
    while True:
        page = list(
            evaluation.chunks.filter(seq__gt=after, stream__in=streams)
            .order_by("seq")
            .values_list("seq", "data")[:LOG_PAGE_CHUNKS]
        )
        if not page:
            return
        yield b"".join(bytes(data) for _, data in page)
        after = page[-1][0]


class EvaluationLogsView(VisibleEvaluationMixin, APIView):
    renderer_classes = [JSONRenderer, PlainTextRenderer]

    @extend_schema(
        parameters=[
            OpenApiParameter("after", int, description="return chunks with seq > after (JSON only)"),
            OpenApiParameter(
                "format",
                str,
                enum=["json", "text"],
                description="text: the whole output as a text/plain attachment (also with Accept: text/plain)",
            ),
            OpenApiParameter("stream", str, enum=list(TEXT_STREAMS), description="with format=text: which stream"),
        ],
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
        if request.accepted_renderer.format == "text":
            return self.text(evaluation, request.query_params.get("stream", "both"))
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

    def text(self, evaluation: Evaluation, stream: str) -> StreamingHttpResponse:
        """The output as stored (bytes as they came), one stream or both interleaved, as a download."""
        if stream not in TEXT_STREAMS:
            raise ValidationError({"stream": [f"Choose one of: {', '.join(TEXT_STREAMS)}."]})
        response = StreamingHttpResponse(
            _text_chunks(evaluation, TEXT_STREAMS[stream]), content_type="text/plain; charset=utf-8"
        )
        name = f"evaluation-{str(evaluation.pk)[:8]}-{stream}.txt"
        response["Content-Disposition"] = f'attachment; filename="{name}"'
        response["X-Content-Type-Options"] = "nosniff"
        response["Content-Security-Policy"] = "default-src 'none'; sandbox"
        return response


class EvaluationResultsView(VisibleEvaluationMixin, APIView):
    @extend_schema(responses=ResultsSerializer)
    def get(self, request, pk):
        evaluation = self.get_evaluation(pk)
        may_see_tests = not evaluation.tests_hidden or is_operator(request.user)
        return Response(ResultsSerializer(evaluation, context={"may_see_tests": may_see_tests}).data)


QUARANTINE_PARAMETER = OpenApiParameter(
    "quarantine", str, description="release-ack: an operator reads a quarantined run's artifacts (audited)"
)


class Quarantined(APIException):
    """A 403 whose body is the quarantine's refusal (``incidents.quarantine_refusal``)."""

    status_code = status.HTTP_403_FORBIDDEN

    def __init__(self, refusal: dict):
        self.detail = refusal


class ArtifactAccessMixin(VisibleEvaluationMixin):
    """The one way every artifact endpoint reaches a run's artifacts: the evaluation must be visible
    to the user (else 404), and the contents of a quarantined run's artifacts (a safety incident) are
    refused (403) unless an operator acknowledges the release, which is audited. Listing names is not
    reading contents, so the list passes ``contents=False``."""

    def get_artifacts(self, pk, *, contents: bool = True, what: str = "artifacts"):
        evaluation = self.get_evaluation(pk)
        if contents:
            refusal = incidents.quarantine_refusal(
                evaluation_id=evaluation.pk,
                user=self.request.user,
                operator=is_operator(self.request.user),
                ack=self.request.query_params.get("quarantine", ""),
                what=f"{what} of evaluation {evaluation.pk}",
                request=self.request,
            )
            if refusal is not None:
                raise Quarantined(refusal)
        return evaluation.artifacts

    def get_artifact(self, pk, name: str) -> Artifact:
        artifacts = self.get_artifacts(pk, what=f"artifact {name[:200]}")
        return get_object_or_404(artifacts, name=name)


def _hostile_file_headers(response: HttpResponse, disposition: str, name: str) -> HttpResponse:
    """Headers for bytes written by a sandboxed program: never sniffed, never run as a document."""
    response["Content-Disposition"] = f'{disposition}; filename="{artifact_files.safe_download_name(name)}"'
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    return response


class ArtifactListView(ArtifactAccessMixin, APIView):
    @extend_schema(responses=ArtifactSerializer(many=True))
    def get(self, request, pk):
        artifacts = self.get_artifacts(pk, contents=False).defer("data").order_by("name")
        return Response(ArtifactSerializer(artifacts, many=True).data)


class ArtifactDownloadView(ArtifactAccessMixin, APIView):
    @extend_schema(
        parameters=[QUARANTINE_PARAMETER],
        responses={(200, "application/octet-stream"): bytes, 403: OpenApiResponse(description="quarantined")},
    )
    def get(self, request, pk, name):
        artifact = self.get_artifact(pk, name)
        response = HttpResponse(bytes(artifact.data), content_type="application/octet-stream")
        _hostile_file_headers(response, "attachment", artifact.name)
        response["ETag"] = f'"{artifact.sha256}"'
        return response


class ArtifactTextView(ArtifactAccessMixin, APIView):
    """The beginning of a text artifact as JSON, for the detail page's preview (415 for a binary file)."""

    @extend_schema(
        summary="Preview a text artifact",
        parameters=[QUARANTINE_PARAMETER],
        responses={
            200: inline_serializer(
                "ArtifactText",
                {
                    "name": serializers.CharField(),
                    "size": serializers.IntegerField(),
                    "text": serializers.CharField(),
                    "truncated": serializers.BooleanField(),
                },
            ),
            403: OpenApiResponse(description="quarantined"),
            415: OpenApiResponse(description="the artifact is not UTF-8 text"),
        },
    )
    def get(self, request, pk, name):
        artifact = self.get_artifact(pk, name)
        preview = artifact_files.text_preview(artifact)
        if preview is None:
            return error_response("This artifact is not UTF-8 text; download it instead.", 415)
        body = {"name": artifact.name, "size": artifact.size, "text": preview.text, "truncated": preview.truncated}
        return Response(body)


class ArtifactImageView(ArtifactAccessMixin, APIView):
    """An artifact served as an image, only if its bytes are PNG, JPEG, GIF or WebP (415 otherwise)."""

    @extend_schema(
        summary="An image artifact, inline",
        parameters=[QUARANTINE_PARAMETER],
        responses={(200, "image/*"): bytes, 403: OpenApiResponse(description="quarantined"), 415: OpenApiResponse()},
    )
    def get(self, request, pk, name):
        artifact = self.get_artifact(pk, name)
        data = bytes(artifact.data)
        content_type = artifact_files.image_type(data[: artifact_files.SNIFF_BYTES])
        if content_type is None:
            return error_response("This artifact is not a PNG, JPEG, GIF or WebP image.", 415)
        response = _hostile_file_headers(HttpResponse(data, content_type=content_type), "inline", artifact.name)
        response["ETag"] = f'"{artifact.sha256}"'
        return response


class ArtifactZipView(ArtifactAccessMixin, APIView):
    """Every artifact of a run as one zip, streamed a file at a time, names made safe to extract."""

    @extend_schema(
        summary="All artifacts as one zip",
        parameters=[QUARANTINE_PARAMETER],
        responses={(200, "application/zip"): bytes, 403: OpenApiResponse(description="quarantined")},
    )
    def get(self, request, pk):
        artifacts = self.get_artifacts(pk, what="all artifacts (zip)")
        response = StreamingHttpResponse(
            artifact_files.stream_zip(artifact_files.artifact_pairs(artifacts)), content_type="application/zip"
        )
        response = _hostile_file_headers(response, "attachment", f"evaluation-{str(pk)[:8]}-artifacts.zip")
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


class RuntimeListView(APIView):
    """The enabled runtimes: name, version, compiled or not, entry point's file name, and whether
    this server can run it now (its image is built); an unavailable one says how to build it."""

    @extend_schema(
        summary="The enabled runtimes, their versions and image builds",
        responses=inline_serializer(
            "Runtime",
            {
                "name": serializers.CharField(),
                "version": serializers.CharField(allow_null=True),
                "compiled": serializers.BooleanField(),
                "file_name": serializers.CharField(),
                "available": serializers.BooleanField(allow_null=True),
                "build_command": serializers.CharField(allow_null=True),
                "build": serializers.JSONField(allow_null=True),
            },
            many=True,
        ),
    )
    def get(self, request):
        return Response([runtimes.state_of(runtime).as_json() for runtime in Runtime.objects.filter(enabled=True)])


class RuntimeBuildView(APIView):
    """Operators: build a runtime's image in the background (again, after a failure). 202 with the
    runtime as the list shows it; 404 for an unknown runtime, 400 for one this server does not build."""

    permission_classes = [IsOperator]

    @extend_schema(
        summary="Build a runtime's image in the background (operators)",
        request=None,
        responses={
            202: OpenApiResponse(description="the build is queued or running: the runtime as the list shows it"),
            400: OpenApiResponse(description="this server does not build that runtime's image"),
        },
    )
    def post(self, request, name):
        runtime = get_object_or_404(Runtime, name=name)
        try:
            user = request.user
            builds.request(runtime, by=user.get_username(), again=True, actor=user, http_request=request)
        except builds.BuildRefused as exc:
            return error_response(exc.message, status.HTTP_400_BAD_REQUEST)
        return Response(runtimes.state_of(runtime).as_json(), status=status.HTTP_202_ACCEPTED)
