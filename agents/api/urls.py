from django.urls import path

from agents.api import views

urlpatterns = [
    path("agent-api/v1/shutdown", views.ShutdownView.as_view(), name="agent-shutdown"),
    path("resource/container-registries", views.ContainerRegistriesView.as_view(), name="container-registries"),
    path("config/docker-registries", views.ContainerRegistriesView.as_view(), name="docker-registries"),
]
