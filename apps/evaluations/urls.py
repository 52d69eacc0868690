"""Evaluation pages. The JSON API lives in ``apps/evaluations/api/urls.py``."""

from django.urls import path

from apps.evaluations import views

app_name = "evaluations"

urlpatterns = [
    path("", views.evaluation_list, name="list"),
    path("evaluations/new/", views.evaluation_new, name="new"),
    path("evaluations/<uuid:pk>/", views.evaluation_detail, name="detail"),
    path("evaluations/<uuid:pk>/summary/", views.evaluation_summary, name="summary"),
    path("evaluations/<uuid:pk>/progress/", views.evaluation_progress, name="progress"),
    path("evaluations/<uuid:pk>/row/", views.evaluation_row, name="row"),
    path("evaluations/<uuid:pk>/cancel/", views.evaluation_cancel, name="cancel"),
    path("evaluations/<uuid:pk>/stop/", views.evaluation_stop, name="stop"),
    path("evaluations/<uuid:pk>/rerun/", views.evaluation_rerun, name="rerun"),
]
