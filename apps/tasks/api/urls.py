from django.urls import path

from apps.tasks.api import views

urlpatterns = [
    path("tasks/", views.TaskListCreateView.as_view(), name="api-tasks"),
    path("tasks/<path:slug>/", views.TaskDetailView.as_view(), name="api-task"),
    path("batches/", views.BatchListCreateView.as_view(), name="api-batches"),
    path("batches/<uuid:pk>/", views.BatchDetailView.as_view(), name="api-batch"),
    path("batches/<uuid:pk>/results/", views.BatchResultsView.as_view(), name="api-batch-results"),
]
