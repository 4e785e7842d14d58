"""Web UI routes of the app proxy (mounted under /ui/ with the ``ui-appproxy`` namespace)."""
from django.urls import path

from appproxy import views

urlpatterns = [
    path("sessions/<uuid:session_id>/apps/<str:app>/open", views.open_app, name="open-app"),
    path("sessions/<uuid:session_id>/apps/<str:app>/open/", views.open_app),
]
