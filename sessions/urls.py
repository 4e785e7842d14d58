"""Web UI routes for compute sessions (mounted under /ui/ with the ``ui-sessions`` namespace)."""
from django.urls import path

from sessions import commit_ui, execute_ui, files_ui, launcher_ui, usage_ui, views

urlpatterns = [
    path("sessions/", views.session_list, name="list"),
    path("my-usage/", usage_ui.my_usage, name="my-usage"),
    path("my-usage/csv/", usage_ui.my_usage_csv, name="my-usage-csv"),
    path("usage-buckets/csv/", usage_ui.usage_buckets_csv, name="usage-buckets-csv"),
    path("sessions/rows/", views.session_list_rows, name="list-rows"),
    path("sessions/new/", views.session_create, name="create"),
    path("sessions/new/hint/", launcher_ui.launch_hint, name="create-hint"),
    path("sessions/<uuid:session_id>/", views.session_detail, name="detail"),
    path("sessions/<uuid:session_id>/status/", views.session_detail_status, name="detail-status"),
    path("sessions/<uuid:session_id>/logs/", views.session_logs, name="logs"),
    path("sessions/<uuid:session_id>/destroy/", views.session_destroy, name="destroy"),
    path("sessions/<uuid:session_id>/restart/", views.session_restart, name="restart"),
    path("sessions/<uuid:session_id>/commit/", commit_ui.session_commit, name="commit"),
    path("sessions/<uuid:session_id>/execute/", execute_ui.session_execute, name="execute"),
    path("sessions/<uuid:session_id>/files/", files_ui.session_files, name="files"),
    path("sessions/<uuid:session_id>/files/download/", files_ui.session_file_download, name="file-download"),
    path("sessions/<uuid:session_id>/files/upload/", files_ui.session_file_upload, name="file-upload"),
]
