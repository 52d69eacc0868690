"""The operator console's pages, mounted at /monitoring/ (the path operators know)."""

from django.urls import path

from apps.console import views

app_name = "console"

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("live/", views.live, name="live"),
    path("alerts/", views.alert_list, name="alerts"),
    path("alerts/acknowledge/", views.alert_acknowledge_many, name="alerts-acknowledge"),
    path("alerts/<int:pk>/acknowledge/", views.alert_acknowledge, name="alert-acknowledge"),
    path("killswitch/", views.killswitch_view, name="killswitch"),
    path("audit/", views.audit_log, name="audit"),
    path("incidents/", views.incident_list, name="incidents"),
    path("incidents/<int:pk>/", views.incident_detail, name="incident"),
    path("incidents/<int:pk>/status/", views.incident_transition, name="incident-transition"),
    path("incidents/<int:pk>/release/", views.incident_release, name="incident-release"),
]
