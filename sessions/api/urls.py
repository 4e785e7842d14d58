from django.urls import path

from sessions.api import commit_views
from sessions.api import execute_views
from sessions.api import files_views
from sessions.api import agent_views, events_view, resource_views, ssh_views, views

urlpatterns = [
    path("session", views.SessionCreateView.as_view(), name="session-create"),
    path("session/_/create", views.SessionCreateView.as_view(), name="session-create-alt"),
    path("session/_/match", views.SessionMatchView.as_view(), name="session-match"),
    path("session/<str:name>", views.SessionDetailView.as_view(), name="session-detail"),
    path("session/<str:name>/logs", views.SessionLogsView.as_view(), name="session-logs"),
    path("session/<str:name>/rename", views.SessionRenameView.as_view(), name="session-rename"),
    path("session/<str:name>/complete", execute_views.SessionCompleteView.as_view(), name="session-complete"),
    path("session/<str:name>/interrupt", execute_views.SessionInterruptView.as_view(), name="session-interrupt"),
    path("session/<str:name>/upload", files_views.SessionUploadView.as_view(), name="session-upload"),
    path("session/<str:name>/download", files_views.SessionDownloadView.as_view(), name="session-download"),
    path("session/<str:name>/download_single", files_views.SessionDownloadSingleView.as_view(),
         name="session-download-single"),
    path("session/<str:name>/files", files_views.SessionFilesView.as_view(), name="session-files"),
    path("session/<str:name>/commit", commit_views.SessionCommitView.as_view(), name="session-commit"),
    path("session/<str:name>/imagify", commit_views.SessionImagifyView.as_view(), name="session-imagify"),
    path("session/<str:name>/direct-access-info", ssh_views.DirectAccessInfoView.as_view(),
         name="session-direct-access-info"),
    path("stream/session/<str:name>/apps", views.SessionAppsView.as_view(), name="session-apps"),
    path("events/session", events_view.session_events, name="session-events"),
    path("resource/presets", resource_views.PresetsView.as_view(), name="resource-presets"),
    path("resource/check-presets", resource_views.CheckPresetsView.as_view(), name="resource-check-presets"),
    path("resource/usage/month", resource_views.UsageMonthView.as_view(), name="resource-usage-month"),
    path("resource/usage/period", resource_views.UsagePeriodView.as_view(), name="resource-usage-period"),
    path("resource/recalculate-usage", resource_views.RecalculateUsageView.as_view(),
         name="resource-recalculate-usage"),
    path("agent-api/v1/sync", agent_views.SyncView.as_view(), name="agent-sync"),
    path("agent-api/v1/events", agent_views.EventsView.as_view(), name="agent-events"),
    path("scaling-groups", resource_views.ScalingGroupsView.as_view(), name="scaling-groups"),
]
