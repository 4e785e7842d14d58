from django.urls import path

from agents.api import views

urlpatterns = [
    path("agent-api/v1/shutdown", views.ShutdownView.as_view(), name="agent-shutdown"),
]
