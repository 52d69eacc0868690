from django.urls import path

from apps.console.api.views import HealthView, KillSwitchView, LivenessView, MetricsView

urlpatterns = [
    path("health/", HealthView.as_view(), name="api-health"),
    path("health/live/", LivenessView.as_view(), name="api-health-live"),
    path("metrics/", MetricsView.as_view(), name="api-metrics"),
    path("killswitch/", KillSwitchView.as_view(), name="api-killswitch"),
]
