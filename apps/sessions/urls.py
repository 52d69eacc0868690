"""Session pages. The JSON API lives in ``apps/sessions/api/urls.py``."""

from django.urls import path

from apps.sessions import views

app_name = "sessions"

urlpatterns = [
    path("sessions/", views.session_list, name="list"),
    path("sessions/<uuid:pk>/", views.session_detail, name="detail"),
    path("sessions/<uuid:pk>/summary/", views.session_summary, name="summary"),
    path("sessions/<uuid:pk>/end/", views.session_end, name="end"),
    path("sessions/<uuid:pk>/stop/", views.session_stop, name="stop"),
]
