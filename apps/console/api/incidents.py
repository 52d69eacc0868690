"""The incidents API: operators list, read, transition and release them and fetch the report; a run's
owner reads the incidents of their own runs (status and public timeline, never reviewers' comments)."""

from __future__ import annotations

import json

from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.accounts.roles import is_operator
from apps.console import incident_report
from apps.monitoring import incidents
from apps.monitoring.models import Incident, IncidentStatus

PAGE = 50


def incident_json(incident: Incident, *, operator: bool) -> dict:
    """One incident as the API shows it: an operator sees everything, an owner the public part."""
    events = incident.events.all() if operator else incident.events.filter(internal=False)
    body = {
        "id": incident.pk,
        "evaluation": str(incident.evaluation_id) if incident.evaluation_id else None,
        "session": str(incident.session_id) if incident.session_id else None,
        "status": incident.status,
        "severity": incident.severity,
        "summary": incident.summary,
        "opened_at": incident.opened_at.isoformat(),
        "updated_at": incident.updated_at.isoformat(),
        "quarantined": incident.quarantined,
        "timeline": [{"at": e.at.isoformat(), "kind": e.kind, "actor": e.actor, "detail": e.detail} for e in events],
    }
    if operator:
        body |= {
            "actor": incident.actor,
            "owner": incident.owner.get_username() if incident.owner else None,
            "status_comment": incident.status_comment,
            "status_changed_by": incident.status_changed_by.get_username() if incident.status_changed_by else None,
            "released_at": incident.released_at.isoformat() if incident.released_at else None,
            "alerts": list(incident.alerts.values_list("pk", flat=True)),
            "evidence": incident.evidence,
            "files": list(incident.files.values("name", "size", "sha256")),
            "report": incident_report.report_path(incident.pk),
        }
    return body


def visible_incidents(user):
    incidents_ = Incident.objects.select_related("owner", "status_changed_by")
    return incidents_ if is_operator(user) else incidents_.filter(owner=user)


class IncidentListView(APIView):
    @extend_schema(
        operation_id="incidents_list",
        parameters=[OpenApiParameter("status", str, description="only incidents with this status")],
        responses=inline_serializer("IncidentList", {"results": serializers.ListField()}),
    )
    def get(self, request):
        rows = visible_incidents(request.user).order_by("-opened_at")
        wanted = request.query_params.get("status")
        if wanted:
            if wanted not in IncidentStatus.values:
                return Response({"detail": f"status must be one of {', '.join(IncidentStatus.values)}"}, status=400)
            rows = rows.filter(status=wanted)
        operator = is_operator(request.user)
        return Response({"results": [incident_json(i, operator=operator) for i in rows[:PAGE]]})


class IncidentDetailView(APIView):
    @extend_schema(responses=inline_serializer("Incident", {"id": serializers.IntegerField()}))
    def get(self, request, pk):
        incident = get_object_or_404(visible_incidents(request.user), pk=pk)
        return Response(incident_json(incident, operator=is_operator(request.user)))

    @extend_schema(
        request=inline_serializer(
            "IncidentTransition", {"status": serializers.CharField(), "comment": serializers.CharField()}
        ),
        responses=inline_serializer("IncidentAfter", {"id": serializers.IntegerField()}),
    )
    def patch(self, request, pk):
        incident = get_object_or_404(visible_incidents(request.user), pk=pk)
        if not is_operator(request.user):
            return Response({"detail": "Only operators change an incident's status."}, status=403)
        body = request.data if isinstance(request.data, dict) else {}
        wanted, comment = body.get("status"), body.get("comment", "")
        if not isinstance(wanted, str) or not isinstance(comment, str):
            return Response({"detail": "status (string) is required; comment is a string."}, status=400)
        try:
            incidents.transition(incident, wanted, actor=request.user, comment=comment, request=request)
        except incidents.TransitionRefused as exc:
            return Response({"detail": str(exc)}, status=400)
        return Response(incident_json(incident, operator=True))


class IncidentReleaseView(APIView):
    @extend_schema(request=None, responses=inline_serializer("IncidentReleased", {"id": serializers.IntegerField()}))
    def post(self, request, pk):
        incident = get_object_or_404(visible_incidents(request.user), pk=pk)
        if not is_operator(request.user):
            return Response({"detail": "Only operators release a quarantine."}, status=403)
        incidents.release(incident, actor=request.user, request=request)
        return Response(incident_json(incident, operator=True), status=status.HTTP_200_OK)


class IncidentReportView(APIView):
    """The report as JSON (default) or Markdown (``?as=md``), as a download; operators only."""

    @extend_schema(
        parameters=[OpenApiParameter("as", str, description="md: the Markdown document (default: JSON)")],
        responses={200: bytes},
    )
    def get(self, request, pk):
        incident = get_object_or_404(visible_incidents(request.user), pk=pk)
        if not is_operator(request.user):
            return Response({"detail": "Only operators read incident reports."}, status=403)
        report = incident_report.build(incident)
        if request.query_params.get("as") == "md":
            response = HttpResponse(incident_report.markdown(report), content_type="text/markdown; charset=utf-8")
            response["Content-Disposition"] = f'attachment; filename="incident-{incident.pk}.md"'
        else:
            response = HttpResponse(json.dumps(report, indent=2), content_type="application/json")
            response["Content-Disposition"] = f'attachment; filename="incident-{incident.pk}.json"'
        response["X-Content-Type-Options"] = "nosniff"
        return response


class IncidentFileView(APIView):
    """A file kept from a stopped session (``?name=``): operators only, as a download, audited."""

    @extend_schema(
        parameters=[
            OpenApiParameter("name", str, required=True, description="the file's name as the incident lists it")
        ],
        responses={200: bytes},
    )
    def get(self, request, pk):
        incident = get_object_or_404(visible_incidents(request.user), pk=pk)
        if not is_operator(request.user):
            return Response({"detail": "Only operators download an incident's evidence."}, status=403)
        name = request.query_params.get("name")
        if not name:
            return Response({"detail": "name is required: the file's name as the incident lists it."}, status=400)
        kept = get_object_or_404(incident.files, name=name)
        incidents.record_quarantined_download(
            incident, actor=request.user, what=f"evidence file {kept.name}", request=request
        )
        response = HttpResponse(bytes(kept.data), content_type="application/octet-stream")
        safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in kept.name.rsplit("/", 1)[-1])
        response["Content-Disposition"] = f'attachment; filename="{safe or "evidence"}"'
        response["X-Content-Type-Options"] = "nosniff"
        response["Content-Security-Policy"] = "default-src 'none'; sandbox"
        return response
