from django.urls import path

from apps.evaluations import converters  # noqa: F401 (registers <evaluation_id:…>)
from apps.evaluations.api import views

urlpatterns = [
    path("runtimes/", views.RuntimeListView.as_view(), name="api-runtimes"),
    path("runtimes/<slug:name>/build/", views.RuntimeBuildView.as_view(), name="api-runtime-build"),
    path("evaluations/", views.EvaluationListCreateView.as_view(), name="api-evaluations"),
    path("evaluations/<evaluation_id:pk>/", views.EvaluationDetailView.as_view(), name="api-evaluation"),
    path("evaluations/<evaluation_id:pk>/stop/", views.EvaluationStopView.as_view(), name="api-evaluation-stop"),
    path("evaluations/<evaluation_id:pk>/logs/", views.EvaluationLogsView.as_view(), name="api-evaluation-logs"),
    path(
        "evaluations/<evaluation_id:pk>/artifacts.zip",
        views.ArtifactZipView.as_view(),
        name="api-evaluation-artifacts-zip",
    ),
    path(
        "evaluations/<evaluation_id:pk>/artifact-text/<path:name>",
        views.ArtifactTextView.as_view(),
        name="api-evaluation-artifact-text",
    ),
    path(
        "evaluations/<evaluation_id:pk>/artifact-image/<path:name>",
        views.ArtifactImageView.as_view(),
        name="api-evaluation-artifact-image",
    ),
    path(
        "evaluations/<evaluation_id:pk>/results/", views.EvaluationResultsView.as_view(), name="api-evaluation-results"
    ),
    path(
        "evaluations/<evaluation_id:pk>/artifacts/", views.ArtifactListView.as_view(), name="api-evaluation-artifacts"
    ),
    path(
        "evaluations/<evaluation_id:pk>/callbacks/",
        views.EvaluationCallbacksView.as_view(),
        name="api-evaluation-callbacks",
    ),
    path(
        "evaluations/<evaluation_id:pk>/samples/", views.EvaluationSamplesView.as_view(), name="api-evaluation-samples"
    ),
    path(
        "evaluations/<evaluation_id:pk>/artifacts/<path:name>",
        views.ArtifactDownloadView.as_view(),
        name="api-evaluation-artifact",
    ),
]
