"""Manager-level endpoints: version root, announcement, slot types, health."""
import logging

from django.http import HttpResponseRedirect, JsonResponse
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from backendai import __version__, health, services, signing
from backendai.api import errors

log = logging.getLogger(__name__)


class RootView(APIView):
    """``GET /``: the API version, unsigned.  Browsers are sent to the web UI."""

    authentication_classes = []
    permission_classes = [AllowAny]

    @extend_schema(responses=inline_serializer("Versions", {"version": serializers.CharField(), "manager": serializers.CharField()}))
    def get(self, request):
        accept = request.META.get("HTTP_ACCEPT", "")
        if "text/html" in accept and "HTTP_AUTHORIZATION" not in request.META:
            return HttpResponseRedirect("/ui/")
        return Response({"version": signing.LATEST_API_VERSION, "manager": __version__})


class AnnouncementView(APIView):
    def get(self, request):
        announcement = services.get_announcement()
        return Response({"enabled": announcement.enabled, "message": announcement.message})

    @extend_schema(request=inline_serializer("AnnouncementUpdate", {
        "enabled": serializers.BooleanField(), "message": serializers.CharField(required=False, allow_blank=True)}))
    def post(self, request):
        if not request.user.is_superadmin:
            raise errors.InsufficientPrivilege("Only superadmins set the announcement")
        enabled = request.data.get("enabled")
        if not isinstance(enabled, bool):
            raise errors.InvalidAPIParameters("enabled must be a boolean")
        message = request.data.get("message", "")
        if not isinstance(message, str):
            raise errors.InvalidAPIParameters("message must be a string")
        services.set_announcement(enabled, message)
        return Response(status=204)


class ResourceSlotsView(APIView):
    """Known slot names and their types, e.g. ``{"cpu": "count", "mem": "bytes"}``."""

    def get(self, request):
        return Response(services.known_slot_types())


def healthz(request):
    return JsonResponse({"status": "alive"})


def readyz(request):
    """200 ``{"status": "ok", "checks": {...}}`` or 503 ``{"status": "unhealthy", "failing": [...], ...}``;
    each check is ``{"ok": bool, ...}`` (``backendai.health``), ``checks.beat.age`` in seconds or null."""
    checks = health.run_checks()
    failing = health.failing(checks)
    if not failing:
        return JsonResponse({"status": "ok", "checks": checks})
    response = JsonResponse({"status": "unhealthy", "failing": failing, "checks": checks}, status=503)
    # An expected answer to a probe polled every few seconds, not a server error: keep it out of
    # django.request's ERROR log (the failing component logs its own trouble).
    log.debug("readyz: unhealthy: %s", ", ".join(failing))
    response._has_been_logged = True
    return response


def api_not_found(request, exception=None):
    return errors.URLNotFound(f"{request.method} {request.path} is not an API path").as_response()


def api_forbidden(request, exception=None, msg: str | None = None):
    return errors.GenericForbidden(msg).as_response()


def api_bad_request(request, exception=None):
    from django.core.exceptions import DisallowedHost, RequestDataTooBig

    if isinstance(exception, RequestDataTooBig):
        return errors.PayloadTooLarge(str(exception) or None).as_response()
    if isinstance(exception, DisallowedHost):
        return errors.GenericBadRequest("The Host header names a host this server does not serve").as_response()
    return errors.GenericBadRequest().as_response()


def api_server_error(request):
    return errors.InternalServerError().as_response()
