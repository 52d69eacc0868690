from django.urls import path

from apps.console.api import incidents
from apps.console.api.views import HealthView, KillSwitchView, LivenessView, MetricsView

urlpatterns = [
    path("health/", HealthView.as_view(), name="api-health"),
    path("health/live/", LivenessView.as_view(), name="api-health-live"),
    path("metrics/", MetricsView.as_view(), name="api-metrics"),
    path("killswitch/", KillSwitchView.as_view(), name="api-killswitch"),
    path("incidents/", incidents.IncidentListView.as_view(), name="api-incidents"),
    path("incidents/<int:pk>/", incidents.IncidentDetailView.as_view(), name="api-incident"),
    path("incidents/<int:pk>/release/", incidents.IncidentReleaseView.as_view(), name="api-incident-release"),
    path("incidents/<int:pk>/files/", incidents.IncidentFileView.as_view(), name="api-incident-file"),
    path("incidents/<int:pk>/report/", incidents.IncidentReportView.as_view(), name="api-incident-report"),
]
