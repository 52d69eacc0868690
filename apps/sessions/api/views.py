"""The sessions API (contract v2, Sessions). Views stay thin: they parse, call services, shape answers.

Another user's session is a 404 on every route, exactly as if it did not exist.
"""

from __future__ import annotations

import base64
import json
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
from apps.monitoring import incidents
from apps.monitoring.models import Incident
from apps.sessions import services, validation
from apps.sessions.api.serializers import SessionSerializer
from apps.sessions.models import EndReason, Session, Status
from apps.sessions.services import SessionError
from apps.sessions.transcript import step_json
from crucible.bodies import BodyTooLarge, allow_body_up_to
from crucible.negotiation import FormatIsOurs

TRANSCRIPT_PAGE = 500
AFTER = re.compile(r"[0-9]{1,12}")
# An exec body carries at most one input as base64 (4/3 of it) and an argv.
EXEC_BODY_SLACK = 4 * 1024 * 1024
FILE_STATUS = {
    "not_found": 404,
    "is_a_directory": 400,
    "not_a_directory": 400,
    "not_a_file": 400,
    "bad_path": 400,
    "permission_denied": 403,
    "too_large": 413,
    "no_space": 413,
    "interrupted": 503,
}


def error_response(exc: SessionError) -> Response:
    body = {"detail": exc.detail, **({"code": exc.code} if exc.code else {}), **exc.extra}
    response = Response(body, status=exc.status)
    if "retry_after" in exc.extra:
        response["Retry-After"] = str(exc.extra["retry_after"])
    return response


def _too_large(limit: int) -> Response:
    return Response(
        {"detail": f"The request body is larger than {limit} bytes.", "code": "too_large"},
        status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
    )


class VisibleSessionMixin:
    def get_session(self, pk) -> Session:
        return get_object_or_404(Session.objects.visible_to(self.request.user).select_related("owner"), pk=pk)


class SessionListCreateView(generics.ListAPIView):
    serializer_class = SessionSerializer

    def get_queryset(self):
        queryset = Session.objects.visible_to(self.request.user).select_related("owner")
        # The incident's id in the same query (the list's cost stays fixed).
        queryset = queryset.annotate(
            incident_pk=Subquery(Incident.objects.filter(session_id=OuterRef("pk")).values("pk")[:1])
        )
        wanted = self.request.query_params.get("status")
        if wanted:
            if wanted not in Status.values:
                raise ValidationError({"status": [f"Unknown status; choose one of: {', '.join(Status.values)}."]})
            queryset = queryset.filter(status=wanted)
        return queryset.order_by("-created_at")

    @extend_schema(
        request=inline_serializer(
            "SessionRequest",
            {
                "language": serializers.ChoiceField(choices=["python", "bash"], required=False),
                "image": serializers.CharField(required=False),
                "memory_mb": serializers.IntegerField(required=False),
                "cpus": serializers.FloatField(required=False),
                "idle_timeout_s": serializers.IntegerField(required=False),
                "max_lifetime_s": serializers.IntegerField(required=False),
                "metadata": serializers.DictField(required=False),
            },
        ),
        responses={201: SessionSerializer},
        description="Start a session; waits until it is ready (or SESSION_START_WAIT_S).",
    )
    def post(self, request):
        fields = validation.session_fields(request.data)
        try:
            session, start_id = services.create(request.user, fields=fields, request=request)
        except SessionError as exc:
            return error_response(exc)
        session = services.wait_ready(session, start_id, settings.SESSION_START_WAIT_S)
        return Response(SessionSerializer(session).data, status=status.HTTP_201_CREATED)


class SessionDetailView(VisibleSessionMixin, APIView):
    @extend_schema(responses=SessionSerializer)
    def get(self, request, pk):
        return Response(SessionSerializer(self.get_session(pk)).data)

    @extend_schema(responses={202: SessionSerializer}, description="End the session (its sandbox is removed).")
    def delete(self, request, pk):
        session = self.get_session(pk)
        services.end(session, EndReason.DELETED, actor=request.user, request=request)
        session.refresh_from_db()
        return Response(SessionSerializer(session).data, status=status.HTTP_202_ACCEPTED)


class SessionStopView(VisibleSessionMixin, APIView):
    @extend_schema(request=None, responses={202: SessionSerializer}, description="Emergency stop.")
    def post(self, request, pk):
        session = self.get_session(pk)
        services.stop(session, actor=request.user, request=request)
        session.refresh_from_db()
        return Response(SessionSerializer(session).data, status=status.HTTP_202_ACCEPTED)


def exec_answer(result: dict, stdout: bytes, stderr: bytes) -> dict:
    answer = {
        "returncode": result.get("returncode"),
        "stdout": stdout.decode("utf-8", errors="replace"),
        "stderr": stderr.decode("utf-8", errors="replace"),
        "timed_out": bool(result.get("timed_out")),
        "truncated": bool(result.get("truncated")),
        "duration_ms": result.get("duration_ms", 0),
        "error": result.get("error") or None,
        "error_message": result.get("error_message", ""),
        "seq": result.get("seq"),
    }
    for name, data in (("stdout", stdout), ("stderr", stderr)):
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            answer[f"{name}_base64"] = base64.b64encode(data).decode()
    return answer


class SessionExecView(VisibleSessionMixin, APIView):
    @extend_schema(
        request=inline_serializer(
            "ExecRequest",
            {
                "cmd": serializers.ListField(child=serializers.CharField()),
                "input": serializers.CharField(required=False),
                "input_base64": serializers.CharField(required=False),
                "env": serializers.DictField(child=serializers.CharField(), required=False),
                "cwd": serializers.CharField(required=False),
                "timeout_s": serializers.FloatField(required=False),
                "user": serializers.CharField(required=False),
            },
        ),
        responses={200: OpenApiResponse(description="returncode, stdout, stderr, timed_out, truncated, error …")},
    )
    def post(self, request, pk):
        session = self.get_session(pk)
        limit = settings.SESSION_FILE_MAX_BYTES * 4 // 3 + EXEC_BODY_SLACK
        try:
            allow_body_up_to(request, limit)
        except BodyTooLarge:
            return _too_large(limit)
        try:
            fields = validation.exec_fields(request.data)
            result, stdout, stderr = services.execute(session, **fields)
        except SessionError as exc:
            return error_response(exc)
        return Response(exec_answer(result, stdout, stderr))


def _path_param(request) -> str:
    try:
        return services.resolve_path(request.query_params.get("path"))
    except SessionError as exc:
        raise ValidationError({"path": [exc.detail]})


def _file_error(result: dict) -> Response:
    code = result["error"]
    return Response({"detail": result.get("message") or code, "code": code}, status=FILE_STATUS.get(code, 400))


class SessionFileView(VisibleSessionMixin, APIView):
    @extend_schema(
        parameters=[
            OpenApiParameter("path", str, required=True, description="absolute, or relative to /sandbox"),
            OpenApiParameter("max_bytes", int, description="413 when the file is larger"),
            OpenApiParameter(
                "quarantine", str, description="release-ack: an operator reads a quarantined session's file (audited)"
            ),
        ],
        responses={200: OpenApiResponse(description="the file's bytes")},
    )
    def get(self, request, pk):
        session = self.get_session(pk)
        path = _path_param(request)
        most = settings.SESSION_FILE_MAX_BYTES
        raw = request.query_params.get("max_bytes")
        if raw is not None:
            if not AFTER.fullmatch(raw):
                raise ValidationError({"max_bytes": ["Must be a non-negative integer."]})
            most = min(most, int(raw))
        refusal = incidents.quarantine_refusal(
            session_id=session.pk,
            user=request.user,
            operator=is_operator(request.user),
            ack=request.query_params.get("quarantine", ""),
            what=f"file {path[:200]} of session {session.pk}",
            request=request,
        )
        if refusal is not None:
            return Response(refusal, status=status.HTTP_403_FORBIDDEN)
        try:
            result, content = services.read_file(session, path, most)
        except SessionError as exc:
            return error_response(exc)
        if result.get("error"):
            return _file_error(result)
        response = HttpResponse(content, content_type="application/octet-stream")
        response["X-Crucible-Step"] = str(result.get("seq"))
        return response

    @extend_schema(
        parameters=[OpenApiParameter("path", str, required=True, description="absolute, or relative to /sandbox")],
        request={"application/octet-stream": bytes},
        responses={200: OpenApiResponse(description="path, size, sha256, seq")},
    )
    def put(self, request, pk):
        session = self.get_session(pk)
        path = _path_param(request)
        try:
            allow_body_up_to(request, settings.SESSION_FILE_MAX_BYTES)
        except BodyTooLarge:
            return _too_large(settings.SESSION_FILE_MAX_BYTES)
        try:
            result = services.write_file(session, path, request.body)
        except SessionError as exc:
            return error_response(exc)
        if result.get("error"):
            return _file_error(result)
        return Response({key: result.get(key) for key in ("path", "size", "sha256", "seq")})


class SessionTranscriptView(VisibleSessionMixin, APIView):
    content_negotiation_class = FormatIsOurs

    @extend_schema(
        parameters=[
            OpenApiParameter("after", int, description="only steps with seq > after"),
            OpenApiParameter("format", str, enum=["json", "jsonl"], description="jsonl: download every step"),
        ],
        responses={200: OpenApiResponse(description='{"steps": [...], "next": N, "complete": bool}')},
    )
    def get(self, request, pk):
        session = self.get_session(pk)
        raw = request.query_params.get("after", "0")
        if not AFTER.fullmatch(raw):
            raise ValidationError({"after": ["Must be a non-negative integer (ASCII digits, at most 12)."]})
        steps = session.steps.filter(seq__gt=int(raw)).order_by("seq")
        if request.query_params.get("format") == "jsonl":
            lines = "".join(json.dumps(step_json(step)) + "\n" for step in steps.iterator())
            response = HttpResponse(lines, content_type="application/jsonl; charset=utf-8")
            response["Content-Disposition"] = f'attachment; filename="session-{session.pk}.jsonl"'
            return response
        page = list(steps[: TRANSCRIPT_PAGE + 1])
        more = len(page) > TRANSCRIPT_PAGE
        page = page[:TRANSCRIPT_PAGE]
        return Response(
            {
                "steps": [step_json(step) for step in page],
                "next": page[-1].seq if page else int(raw),
                "complete": not more and session.status == Status.ENDED,
            }
        )
