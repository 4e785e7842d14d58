from django.contrib import admin
from django.urls import include, path
from django.views.csrf import csrf_failure as django_csrf_failure
from django.views.defaults import bad_request, page_not_found, permission_denied, server_error
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from accounts.api import bgtask_events
from backendai.api import audit_views, graphql, unavailable, views
from backendai.api.hints import HintRelayView
from backendai.api.middleware import is_api_path
from backendai.api.schema import INTERNAL_SCHEMA_SETTINGS
from backendai.metrics import metrics_view
from vfolders.api import views as vfolder_views

urlpatterns = [
    path("", views.RootView.as_view(), name="api-root"),
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    path("metrics", metrics_view, name="metrics"),
    path("manager/announcement", views.AnnouncementView.as_view(), name="announcement"),
    path("config/resource-slots", views.ResourceSlotsView.as_view(), name="resource-slots"),
    path("config/vfolder-types", vfolder_views.FolderTypesView.as_view(), name="vfolder-types"),
    path("spec/openapi", SpectacularAPIView.as_view(authentication_classes=[], permission_classes=[]), name="openapi"),
    # the split view serves Swagger UI's start-up script as a file of its own (the CSP allows no inline script)
    path("spec/docs", SpectacularSwaggerSplitView.as_view(url_name="openapi", authentication_classes=[], permission_classes=[]), name="swagger"),
    # the daemons' endpoints (agents, app proxy workers, the hint relay) in a schema of their own
    path("spec/internal/openapi", SpectacularAPIView.as_view(custom_settings=INTERNAL_SCHEMA_SETTINGS,
                                                            authentication_classes=[], permission_classes=[]),
         name="openapi-internal"),
    path("spec/internal/docs", SpectacularSwaggerSplitView.as_view(url_name="openapi-internal",
                                                                  authentication_classes=[], permission_classes=[]),
         name="swagger-internal"),
    path("internal/hints", HintRelayView.as_view(), name="internal-hints"),
    path("admin/gql", graphql.GraphQLView.as_view(), name="graphql"),
    path("admin/graphql", graphql.LegacyGraphQLView.as_view(), name="graphql-legacy"),
    path("events/background-task", bgtask_events.background_task_events, name="background-task-events"),
    path("", include("accounts.api.urls")),
    path("", include("agents.api.urls")),
    path("", include("sessions.api.urls")),
    path("", include("appproxy.api.urls")),
    path("", include("vfolders.api.urls")),
    path("", include("serving.api.urls")),
    path("", include("backendai.exports.urls")),  # CSV reports the apps register (accounts, sessions, backendai.audit_client)
    path("v2/audit-logs/search", audit_views.AuditLogSearchView.as_view(), name="audit-log-search"),  # 26.09 v2 CLI
    path("ui/", include(("accounts.urls", "ui"), namespace="ui")),
    path("ui/", include(("agents.urls", "ui-agents"), namespace="ui-agents")),
    path("ui/", include(("vfolders.urls", "ui-vfolders"), namespace="ui-vfolders")),
    path("ui/", include(("sessions.urls", "ui-sessions"), namespace="ui-sessions")),
    path("ui/", include(("appproxy.urls", "ui-appproxy"), namespace="ui-appproxy")),
    path("ui/", include(("serving.urls", "ui-serving"), namespace="ui-serving")),
    path("ui/", include(("sessions.operators_urls", "ui-operators"), namespace="ui-operators")),
    path("admin/", admin.site.urls),
]

# Session mode (what Backend.AI's webserver adds): /server/login|logout|login-check, and every API
# route again under /func/ (the same views and rules) with the login cookie instead of a signature
# (accounts.api.websession; the signed API at the root never reads cookies).
_FUNC_ROUTES = [p for p in urlpatterns if is_api_path(f"/{p.pattern}") and not str(p.pattern).startswith("internal/")]
urlpatterns += [
    path("server/", include("accounts.api.server_urls")),
    path("func/", include((_FUNC_ROUTES, "func"), namespace="func")),
]


def handler404(request, exception=None):
    if is_api_path(request.path):
        return views.api_not_found(request, exception)

    return page_not_found(request, exception)


def handler403(request, exception=None):
    """A PermissionDenied raised outside a DRF view: problem+json on the API, templates/403.html on the UI."""
    if is_api_path(request.path):
        return views.api_forbidden(request, exception)

    return permission_denied(request, exception)


def csrf_failure(request, reason=""):
    """``CSRF_FAILURE_VIEW``: templates/403_csrf.html for a browser's form; problem+json on the API."""
    if is_api_path(request.path):
        return views.api_forbidden(request, None, "CSRF check failed: send the CSRF cookie and X-CSRFToken header")
    return django_csrf_failure(request, reason)


def handler400(request, exception=None):
    """Django's answer to a SuspiciousOperation raised outside a DRF view (a Host
    outside ALLOWED_HOSTS, a body past DATA_UPLOAD_MAX_MEMORY_SIZE): problem+json on the API."""
    if is_api_path(request.path):
        return views.api_bad_request(request, exception)

    return bad_request(request, exception)


def handler500(request):
    refused = unavailable.refusal_for_current_exception(request)  # no database connection now: 503
    if refused is not None:
        return refused
    if is_api_path(request.path):
        return views.api_server_error(request)

    return server_error(request)
