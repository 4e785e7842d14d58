from django.urls import path

from sessions.api import agent_views, events_view, resource_views, views

urlpatterns = [
    path("session", views.SessionCreateView.as_view(), name="session-create"),
    path("session/_/create", views.SessionCreateView.as_view(), name="session-create-alt"),
    path("session/_/match", views.SessionMatchView.as_view(), name="session-match"),
    path("session/<str:name>", views.SessionDetailView.as_view(), name="session-detail"),
    path("session/<str:name>/logs", views.SessionLogsView.as_view(), name="session-logs"),
    path("session/<str:name>/rename", views.SessionRenameView.as_view(), name="session-rename"),
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
