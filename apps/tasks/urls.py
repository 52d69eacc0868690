"""Task and batch pages. The JSON API lives in ``apps/tasks/api/urls.py``."""

from django.urls import path

from apps.tasks import views

app_name = "tasks"

urlpatterns = [
    path("tasks/", views.task_list, name="list"),
    # Outside /tasks/<slug>/: any word there could be a task's slug.
    path("new-task/", views.task_new, name="new"),
    path("edit-task/<path:slug>/", views.task_edit, name="edit"),
    path("tasks/<path:slug>/", views.task_detail, name="detail"),
    path("batches/", views.batch_list, name="batches"),
    path("batches/<uuid:pk>/", views.batch_detail, name="batch"),
    path("batches/<uuid:pk>/cancel/", views.batch_cancel, name="batch-cancel"),
]
