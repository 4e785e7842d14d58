"""Web UI routes for compute sessions (mounted under /ui/ with the ``ui-sessions`` namespace)."""
from django.urls import path

from sessions import views

urlpatterns = [
    path("sessions/", views.session_list, name="list"),
    path("sessions/rows/", views.session_list_rows, name="list-rows"),
    path("sessions/new/", views.session_create, name="create"),
    path("sessions/<uuid:session_id>/", views.session_detail, name="detail"),
    path("sessions/<uuid:session_id>/status/", views.session_detail_status, name="detail-status"),
    path("sessions/<uuid:session_id>/logs/", views.session_logs, name="logs"),
    path("sessions/<uuid:session_id>/destroy/", views.session_destroy, name="destroy"),
    path("sessions/<uuid:session_id>/restart/", views.session_restart, name="restart"),
]
