"""Evaluation pages. The JSON API lives in ``apps/evaluations/api/urls.py``."""

from django.urls import path

from apps.evaluations import (
    converters,  # noqa: F401 (registers <evaluation_id:…>)
    views,
)

app_name = "evaluations"

urlpatterns = [
    path("", views.evaluation_list, name="list"),
    path("evaluations/new/", views.evaluation_new, name="new"),
    path("evaluations/compare/", views.evaluation_compare, name="compare"),
    path("evaluations/runtime-builds/", views.runtime_builds, name="runtime-builds"),
    path("evaluations/<evaluation_id:pk>/", views.evaluation_detail, name="detail"),
    path("evaluations/<evaluation_id:pk>/summary/", views.evaluation_summary, name="summary"),
    path("evaluations/<evaluation_id:pk>/row/", views.evaluation_row, name="row"),
    path("evaluations/<evaluation_id:pk>/cancel/", views.evaluation_cancel, name="cancel"),
    path("evaluations/<evaluation_id:pk>/stop/", views.evaluation_stop, name="stop"),
    path("evaluations/<evaluation_id:pk>/rerun/", views.evaluation_rerun, name="rerun"),
    path("evaluations/<evaluation_id:pk>/progress/", views.evaluation_progress, name="progress"),
]
