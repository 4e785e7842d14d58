"""ROOT_URLCONF of ``python -m appproxy.coordinator``: the coordinator's routes and nothing else."""
from django.urls import path

from appproxy.api import coordinator_views as views
from appproxy.api import urls as worker_urls
from backendai.api import unavailable
from backendai.api import views as api_views

urlpatterns = [
    path("health", views.HealthView.as_view(), name="coordinator-health"),
    path("workers", views.WorkerListView.as_view(), name="coordinator-workers"),
    path("workers/register", views.RegisterView.as_view(), name="coordinator-register"),
    path("workers/<str:worker_id>", views.WorkerDetailView.as_view(), name="coordinator-worker"),
    path("workers/<str:worker_id>/heartbeat", views.HeartbeatView.as_view(), name="coordinator-heartbeat"),
    path("routes", views.RouteListView.as_view(), name="coordinator-routes"),
    path("routes/<str:route_id>", views.RouteDetailView.as_view(), name="coordinator-route"),
    path("v2/endpoints/<str:endpoint_id>", views.EndpointView.as_view(), name="coordinator-endpoint"),
    path("v2/endpoints/<str:endpoint_id>/health", views.EndpointHealthView.as_view(),
         name="coordinator-endpoint-health"),
    path("v2/endpoints/<str:endpoint_id>/traffic", views.EndpointTrafficView.as_view(),
         name="coordinator-endpoint-traffic"),
    path("v2/endpoints/<str:endpoint_id>/series", views.EndpointSeriesView.as_view(),
         name="coordinator-endpoint-series"),
    # today's worker API, exactly as the manager serves it (workers need not know where they are)
    *[p for p in worker_urls.urlpatterns if str(p.pattern).startswith("appproxy-api/")],
]


def handler404(request, exception=None):
    return api_views.api_not_found(request, exception)


def handler400(request, exception=None):
    return api_views.api_bad_request(request, exception)


def handler500(request):
    refused = unavailable.refusal_for_current_exception(request)  # no database connection now: 503
    return refused if refused is not None else api_views.api_server_error(request)
