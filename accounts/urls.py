"""Web UI routes (mounted under /ui/ with the ``ui`` namespace)."""
from django.contrib.auth import views as auth_views
from django.urls import path

from accounts import views

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("live/", views.dashboard_live, name="dashboard-live"),
    path("settings/", views.user_settings, name="settings"),
    path("settings/password/", views.change_password, name="password"),
    path("login/", views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("keys/", views.keypairs, name="keypairs"),
    path("keys/action/", views.keypair_action, name="keypair-action"),
    path("tasks/", views.background_tasks, name="tasks"),
    path("tasks/rows/", views.background_task_rows, name="task-rows"),
    path("tasks/<str:task_id>/", views.background_task_detail, name="task"),
    path("tasks/<str:task_id>/status/", views.background_task_status, name="task-status"),
]
