from django.urls import path

from apps.evaluations.api import views

urlpatterns = [
    path("evaluations/", views.EvaluationListCreateView.as_view(), name="api-evaluations"),
    path("evaluations/<uuid:pk>/", views.EvaluationDetailView.as_view(), name="api-evaluation"),
    path("evaluations/<uuid:pk>/stop/", views.EvaluationStopView.as_view(), name="api-evaluation-stop"),
    path("evaluations/<uuid:pk>/logs/", views.EvaluationLogsView.as_view(), name="api-evaluation-logs"),
    path("evaluations/<uuid:pk>/results/", views.EvaluationResultsView.as_view(), name="api-evaluation-results"),
    path("evaluations/<uuid:pk>/artifacts/", views.ArtifactListView.as_view(), name="api-evaluation-artifacts"),
    path("evaluations/<uuid:pk>/callbacks/", views.EvaluationCallbacksView.as_view(), name="api-evaluation-callbacks"),
    path("evaluations/<uuid:pk>/samples/", views.EvaluationSamplesView.as_view(), name="api-evaluation-samples"),
    path("evaluations/<uuid:pk>/artifacts.zip", views.ArtifactZipView.as_view(), name="api-evaluation-artifacts-zip"),
    path(
        "evaluations/<uuid:pk>/artifact-text/<path:name>",
        views.ArtifactTextView.as_view(),
        name="api-evaluation-artifact-text",
    ),
    path(
        "evaluations/<uuid:pk>/artifact-image/<path:name>",
        views.ArtifactImageView.as_view(),
        name="api-evaluation-artifact-image",
    ),
    path(
        "evaluations/<uuid:pk>/artifacts/<path:name>",
        views.ArtifactDownloadView.as_view(),
        name="api-evaluation-artifact",
    ),
]
