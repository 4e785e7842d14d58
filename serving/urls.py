"""Web UI routes for model serving (mounted under /ui/ with the ``ui-serving`` namespace)."""
from django.urls import path

from serving import views

urlpatterns = [
    path("serving/", views.endpoint_list, name="list"),
    path("serving/new/", views.endpoint_create, name="create"),
    path("serving/<uuid:endpoint_id>/", views.endpoint_detail, name="detail"),
    path("serving/<uuid:endpoint_id>/live/", views.endpoint_live, name="live"),
    path("serving/<uuid:endpoint_id>/scale/", views.endpoint_scale, name="scale"),
    path("serving/<uuid:endpoint_id>/routes/<uuid:route_id>/traffic-ratio/", views.route_traffic_ratio,
         name="traffic-ratio"),
    path("serving/<uuid:endpoint_id>/token/", views.endpoint_token, name="token"),
    path("serving/<uuid:endpoint_id>/tokens/revoke/", views.endpoint_revoke_tokens, name="revoke-tokens"),
    path("serving/<uuid:endpoint_id>/errors/clear/", views.endpoint_clear_errors, name="clear-errors"),
    path("serving/<uuid:endpoint_id>/destroy/", views.endpoint_destroy, name="destroy"),
    path("serving/<uuid:endpoint_id>/rules/", views.rule_create, name="rule-create"),
    path("serving/<uuid:endpoint_id>/rules/<uuid:rule_id>/delete/", views.rule_delete, name="rule-delete"),
]
