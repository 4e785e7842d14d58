from django.urls import path

from agents import views

urlpatterns = [path("resource-groups/", views.resource_groups, name="resource-groups")]
