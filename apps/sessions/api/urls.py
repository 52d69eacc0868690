from django.urls import path

from apps.sessions.api import views

urlpatterns = [
    path("sandboxes/", views.SessionListCreateView.as_view(), name="api-sessions"),
    path("sandboxes/<uuid:pk>/", views.SessionDetailView.as_view(), name="api-session"),
    path("sandboxes/<uuid:pk>/stop/", views.SessionStopView.as_view(), name="api-session-stop"),
    path("sandboxes/<uuid:pk>/exec/", views.SessionExecView.as_view(), name="api-session-exec"),
    path("sandboxes/<uuid:pk>/files/", views.SessionFileView.as_view(), name="api-session-files"),
    path("sandboxes/<uuid:pk>/execs/", views.SessionTranscriptView.as_view(), name="api-session-execs"),
]
