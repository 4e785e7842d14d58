"""The operators' pages (superadmins), mounted under /ui/ with the ``ui-operators`` namespace."""
from django.urls import path

from sessions import operators_ui as views

urlpatterns = [
    path("agents/", views.agents, name="agents"),
    path("agents/rows/", views.agent_rows, name="agent-rows"),
    path("agents/action/", views.agent_action, name="agent-action"),
    path("images/", views.images, name="images"),
    path("images/rescan/", views.rescan, name="rescan"),
    path("maintenance/", views.maintenance, name="maintenance"),
    path("maintenance/recalculate/", views.recalculate, name="recalculate"),
    path("maintenance/clear-stuck/", views.clear_stuck, name="clear-stuck"),
    path("usage/", views.usage, name="usage"),
]
