from django.urls import path

from agents.api import views

urlpatterns = [
    path("agent-api/v1/sync", views.SyncView.as_view(), name="agent-sync"),
    path("agent-api/v1/events", views.EventsView.as_view(), name="agent-events"),
    path("agent-api/v1/shutdown", views.ShutdownView.as_view(), name="agent-shutdown"),
]
