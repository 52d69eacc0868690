"""The tasks and batches API (contract v2). Views stay thin: they parse, call services, shape responses."""

from __future__ import annotations

import json

from django.conf import settings
from django.db.models import Prefetch
from django.http import StreamingHttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, status
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.accounts.roles import is_operator
from apps.evaluations.api.views import error_response, throttled_response
from apps.evaluations.models import Evaluation, TestResult
from apps.evaluations.services import PriorityNotAllowed, Throttled
from apps.tasks import progress, services
from apps.tasks.api.serializers import (
    BatchBodySerializer,
    BatchSerializer,
    SampleResultSerializer,
    TaskBodySerializer,
    TaskSerializer,
)
from apps.tasks.models import Batch, Task
from apps.tasks.validation import BatchTooLarge, TaskInvalid
from crucible.bodies import BodyTooLarge, allow_body_up_to
from crucible.negotiation import FormatIsOurs

RESULTS_CHUNK = 500


def invalid_response(exc: TaskInvalid) -> Response:
    code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE if isinstance(exc, BatchTooLarge) else status.HTTP_400_BAD_REQUEST
    first = next(iter(exc.errors.items()))
    return Response({**exc.errors, "detail": f"{first[0]}: {first[1][0]}"}, status=code)


class TaskListCreateView(generics.ListAPIView):
    serializer_class = TaskSerializer

    @extend_schema(
        parameters=[
            OpenApiParameter("q", str, description="Search slug, title and prompt."),
            OpenApiParameter("source", str, description="Only tasks from this source, e.g. humaneval."),
        ]
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        tasks = Task.objects.visible_to(self.request.user).latest().select_related("owner").order_by("slug")
        source = self.request.query_params.get("source")
        if source:
            tasks = tasks.filter(source=source[:64])
        return tasks.search(self.request.query_params.get("q", ""))

    @extend_schema(request=TaskBodySerializer, responses={201: TaskSerializer})
    def post(self, request):
        try:
            task = services.create_task(request.user, request.data, request=request)
        except TaskInvalid as exc:
            return invalid_response(exc)
        return Response(TaskSerializer(task, context={"request": request}).data, status=status.HTTP_201_CREATED)


class TaskDetailView(APIView):
    def get_task(self, request, slug) -> Task:
        tasks = Task.objects.visible_to(request.user).filter(slug=slug).select_related("owner")
        version = request.query_params.get("version")
        if version is not None:
            if not version.isascii() or not version.isdigit() or len(version) > 9:
                raise TaskInvalid({"version": ["Must be a positive whole number."]})
            return get_object_or_404(tasks, version=int(version))
        return get_object_or_404(tasks, is_latest=True)

    @extend_schema(
        responses=TaskSerializer,
        parameters=[OpenApiParameter("version", int, description="An earlier version (default: the latest).")],
    )
    def get(self, request, slug):
        try:
            task = self.get_task(request, slug)
        except TaskInvalid as exc:
            return invalid_response(exc)
        return Response(TaskSerializer(task, context={"request": request}).data)

    @extend_schema(request=TaskBodySerializer, responses=TaskSerializer)
    def patch(self, request, slug):
        task = get_object_or_404(Task.objects.visible_to(request.user), slug=slug, is_latest=True)
        try:
            edited = services.edit_task(task, request.user, request.data, request=request)
        except services.NotTaskOwner as exc:
            return error_response(str(exc), status.HTTP_403_FORBIDDEN)
        except TaskInvalid as exc:
            return invalid_response(exc)
        return Response(TaskSerializer(edited, context={"request": request}).data)

    put = patch


class BatchListCreateView(generics.ListAPIView):
    serializer_class = BatchSerializer

    def get_queryset(self):
        return Batch.objects.visible_to(self.request.user).select_related("owner", "task")

    def list(self, request, *args, **kwargs):
        page = self.paginate_queryset(self.get_queryset())
        data = [{**BatchSerializer(b).data, **progress.summary(b)} for b in page]
        return self.get_paginated_response(data)

    @extend_schema(request=BatchBodySerializer, responses={201: BatchSerializer})
    def post(self, request):
        try:
            allow_body_up_to(request, settings.BATCH_MAX_BODY_BYTES)  # 10 000 samples are megabytes
        except BodyTooLarge as exc:
            return error_response(str(exc), status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
        try:
            batch = services.submit_batch(request.user, request.data, request=request)
        except TaskInvalid as exc:
            return invalid_response(exc)
        except PriorityNotAllowed as exc:
            return error_response(exc.message, status.HTTP_403_FORBIDDEN)
        except services.BatchRefused as exc:
            return throttled_response(Throttled(exc.message, exc.retry_after))
        return Response({**BatchSerializer(batch).data, **progress.summary(batch)}, status=status.HTTP_201_CREATED)


class VisibleBatchMixin:
    def get_batch(self, request, pk) -> Batch:
        return get_object_or_404(Batch.objects.visible_to(request.user).select_related("owner", "task"), pk=pk)


class BatchDetailView(VisibleBatchMixin, APIView):
    @extend_schema(responses=BatchSerializer)
    def get(self, request, pk):
        batch = self.get_batch(request, pk)
        return Response({**BatchSerializer(batch).data, **progress.summary(batch)})

    @extend_schema(responses={202: BatchSerializer})
    def delete(self, request, pk):
        batch = self.get_batch(request, pk)
        services.cancel_batch(batch, actor=request.user, request=request)
        return Response({**BatchSerializer(batch).data, **progress.summary(batch)}, status=status.HTTP_202_ACCEPTED)


def sample_result(evaluation: Evaluation, *, operator: bool) -> dict:
    """One sample as the results list it; ``detail`` only for those who may see its task's tests."""
    may_see = operator or not evaluation.tests_hidden
    return {
        "evaluation": str(evaluation.pk),
        "sample": (evaluation.metadata or {}).get("sample"),
        "task": evaluation.task,
        "task_version": evaluation.task_version,
        "status": evaluation.status,
        "reason": evaluation.reason or None,
        "passed": evaluation.passed,
        "duration_ms": evaluation.duration_ms,
        "tests": [
            {
                "name": t.name,
                "category": t.category,
                "passed": t.passed,
                "status": t.status,
                "duration_ms": t.duration_ms,
                "message": t.message,
                **({"detail": t.detail} if may_see else {}),
            }
            for t in evaluation.test_results.all()
        ],
    }


class BatchResultsView(VisibleBatchMixin, generics.GenericAPIView):
    content_negotiation_class = FormatIsOurs
    serializer_class = SampleResultSerializer

    @extend_schema(
        parameters=[OpenApiParameter("format", str, enum=["json", "jsonl"], description="jsonl: the whole batch.")]
    )
    def get(self, request, pk):
        batch = self.get_batch(request, pk)
        operator = is_operator(request.user)
        samples = (
            Evaluation.objects.filter(batch_id=batch.pk)
            .order_by("created_at", "pk")
            .prefetch_related(Prefetch("test_results", queryset=TestResult.objects.order_by("position")))
        )
        if request.query_params.get("format") == "jsonl":
            lines = (
                json.dumps(sample_result(e, operator=operator)) + "\n"
                for e in samples.iterator(chunk_size=RESULTS_CHUNK)
            )
            response = StreamingHttpResponse(lines, content_type="application/x-ndjson")
            response["Content-Disposition"] = f'attachment; filename="batch-{batch.pk}.jsonl"'
            return response
        page = self.paginate_queryset(samples)
        return self.get_paginated_response([sample_result(e, operator=operator) for e in page])
