"""``/services`` (Backend.AI's model serving API); the ``_`` paths come before ``<service_id>``."""
from django.urls import path

from serving.api import autoscale_views, views

urlpatterns = [
    path("services", views.ServiceCollectionView.as_view(), name="services"),
    path("services/_/try", views.ServiceTryView.as_view(), name="services-try"),
    path("services/_/runtimes", views.RuntimesView.as_view(), name="services-runtimes"),
    path("services/<str:service_id>", views.ServiceDetailView.as_view(), name="services-detail"),
    path("services/<str:service_id>/scale", views.ServiceScaleView.as_view(), name="services-scale"),
    path("services/<str:service_id>/sync", views.ServiceSyncView.as_view(), name="services-sync"),
    path("services/<str:service_id>/routings/<str:route_id>", views.RouteView.as_view(), name="services-route"),
    path("services/<str:service_id>/token", views.TokenView.as_view(), name="services-token"),
    path("services/<str:service_id>/errors", views.ErrorsView.as_view(), name="services-errors"),
    path("services/<str:service_id>/errors/clear", views.ErrorsClearView.as_view(), name="services-errors-clear"),
    path("services/<str:service_id>/auto-scaling-rules", autoscale_views.AutoScalingRuleCollectionView.as_view(),
         name="services-auto-scaling-rules"),
    path("services/<str:service_id>/auto-scaling-rules/<str:rule_id>",
         autoscale_views.AutoScalingRuleDetailView.as_view(), name="services-auto-scaling-rule"),
]
