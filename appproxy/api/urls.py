from django.urls import path

from appproxy.api import views

urlpatterns = [
    path("appproxy-api/v1/workers/<str:authority>", views.WorkerRegisterView.as_view(), name="appproxy-register"),
    path("appproxy-api/v1/workers/<str:authority>/heartbeat", views.WorkerHeartbeatView.as_view(),
         name="appproxy-heartbeat"),
    path("appproxy-api/v1/workers/<str:authority>/circuits", views.WorkerCircuitsView.as_view(),
         name="appproxy-circuits"),
    path("appproxy-api/v1/workers/<str:authority>/route-health", views.WorkerRouteHealthView.as_view(),
         name="appproxy-route-health"),
    path("appproxy-api/v1/workers/<str:authority>/shutdown", views.WorkerShutdownView.as_view(),
         name="appproxy-shutdown"),
    path("appproxy-api/v1/workers/<str:authority>/setup-tokens/redeem", views.WorkerRedeemSetupView.as_view(),
         name="appproxy-redeem-setup"),
    path("session/<str:name>/start-service", views.StartServiceView.as_view(), name="session-start-service"),
]
