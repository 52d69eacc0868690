from django.urls import path

from apps.monitoring.api.views import HealthView, KillSwitchView, MetricsView, SamplesView

urlpatterns = [
    path("health/", HealthView.as_view(), name="api-health"),
    path("metrics/", MetricsView.as_view(), name="api-metrics"),
    path("killswitch/", KillSwitchView.as_view(), name="api-killswitch"),
    path("evaluations/<uuid:pk>/samples/", SamplesView.as_view(), name="api-evaluation-samples"),
]
