"""``/services``: model serving with Backend.AI's paths and answers (24.09 manager,
clients 23.9.10 and 24.9.14).  Thin: parse and validate (``serving.api.serializers``),
call ``serving.services.endpoints`` (the one door for endpoint and route changes),
render.  Ids in the path are UUIDs (dashed or hex); anything else is 400."""
from __future__ import annotations

import logging
import uuid

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from backendai.api import errors
from serving.api import serializers as s
from serving.models import LIVE_ROUTE, LifecycleStage, RouteStatus
from serving.services import definitions, endpoints
from sessions.enqueue import owner_keypair

log = logging.getLogger(__name__)
OBJECT = OpenApiTypes.OBJECT


def parse_id(value: str, field: str = "service_id") -> str:
    """A UUID from the path (dashed or hex), dashed; anything else is 400."""
    if not isinstance(value, str) or len(value) > 36:
        raise errors.InvalidAPIParameters(f"{field}: must be a UUID")
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise errors.InvalidAPIParameters(f"{field}: must be a UUID") from None


def _endpoint(request, service_id: str):
    """The endpoint the caller may address (``get_endpoint`` answers 404 for any other)."""
    return endpoints.get_endpoint(request.user, parse_id(service_id))


def _healthy(endpoint) -> list:
    return [r for r in endpoint.routings.all() if r.status == RouteStatus.HEALTHY]


def compact_info(endpoint) -> dict:
    """An item of ``GET /services`` (Backend.AI's ``CompactServeInfoModel``)."""
    return {
        "id": str(endpoint.pk),
        "name": endpoint.name,
        "replicas": endpoint.replicas,
        "desired_session_count": endpoint.replicas,
        "active_route_count": len(_healthy(endpoint)),
        "service_endpoint": endpoint.url or None,
        "is_public": endpoint.open_to_public,
        "runtime_variant": endpoint.runtime_variant,
        "lifecycle_stage": endpoint.lifecycle_stage,
    }


def route_info(route) -> dict:
    return {"route_id": str(route.pk), "session_id": str(route.session_id) if route.session_id else None,
            "traffic_ratio": route.traffic_ratio}


def serve_info(endpoint) -> dict:
    """``GET /services/{id}`` and the answer of ``POST /services`` (``ServeInfoModel``)."""
    return {
        "endpoint_id": str(endpoint.pk),
        "model_id": str(endpoint.model_id) if endpoint.model_id else None,
        "extra_mounts": [str(m.get("vfolder_id")) for m in (endpoint.extra_mounts or []) if isinstance(m, dict)],
        "name": endpoint.name,
        "replicas": endpoint.replicas,
        "desired_session_count": endpoint.replicas,
        "active_routes": [route_info(r) for r in _healthy(endpoint)],
        "service_endpoint": endpoint.url or None,
        "is_public": endpoint.open_to_public,
        "runtime_variant": endpoint.runtime_variant,
        "lifecycle_stage": endpoint.lifecycle_stage,
    }


class ServiceCollectionView(APIView):
    """``GET /services`` lists the caller's live endpoints (``?name=`` narrows: the client resolves a
    name this way); ``POST /services`` creates one."""

    @extend_schema(request=s.ListSerializer, responses=OBJECT, operation_id="services_list")
    def get(self, request):
        p = s.params(request, s.ListSerializer)
        keypair = owner_keypair(request.user, request.auth, p.get("owner_access_key") or None)
        query = (endpoints.visible_endpoints(request.user).filter(session_owner=keypair.user)
                 .exclude(lifecycle_stage=LifecycleStage.DESTROYED).prefetch_related("routings"))
        if p.get("name"):
            query = query.filter(name=p["name"])
        return Response([compact_info(e) for e in query.order_by("-created_at")])

    @extend_schema(request=s.ServiceCreateSerializer, responses=OBJECT, operation_id="services_create")
    def post(self, request):
        spec = s.parse_create(request.data)
        endpoint = endpoints.create_endpoint(request.user, request.auth, spec)
        log.info("service %s (%s) created by %s with %d replica(s)", endpoint.pk, endpoint.name, request.user.email,
                 endpoint.replicas)
        return Response(serve_info(endpoint))


class ServiceTryView(APIView):
    """``POST /services/_/try``: validate the request as a create would, then start one inference
    session and end it, as a background task (``{"task_id"}``, followed over
    ``/events/background-task``).  Nothing is created when the request is refused."""

    @extend_schema(request=s.ServiceCreateSerializer, responses=OBJECT, operation_id="services_try")
    def post(self, request):
        spec = s.parse_create(request.data)
        task_id = endpoints.try_start(request.user, request.auth, spec)
        return Response({"task_id": str(task_id)})


class RuntimesView(APIView):
    @extend_schema(responses=OBJECT, operation_id="services_runtimes")
    def get(self, request):
        return Response({"runtimes": definitions.runtimes()})


class ServiceDetailView(APIView):
    @extend_schema(responses=OBJECT, operation_id="services_info")
    def get(self, request, service_id):
        return Response(serve_info(_endpoint(request, service_id)))

    @extend_schema(responses=OBJECT, operation_id="services_delete")
    def delete(self, request, service_id):
        endpoints.destroy(request.user, _endpoint(request, service_id))
        return Response({"success": True})


class ServiceScaleView(APIView):
    @extend_schema(request=s.ScaleSerializer, responses=OBJECT, operation_id="services_scale")
    def post(self, request, service_id):
        endpoint = _endpoint(request, service_id)
        p = s.params(request, s.ScaleSerializer)
        endpoint = endpoints.scale(request.user, endpoint, p["to"])
        current = endpoint.routings.filter(status__in=list(LIVE_ROUTE)).count()
        return Response({"current_route_count": current, "target_count": endpoint.replicas})


class ServiceSyncView(APIView):
    @extend_schema(request=None, responses=OBJECT, operation_id="services_sync")
    def post(self, request, service_id):
        endpoints.sync(request.user, _endpoint(request, service_id))
        return Response({"success": True})


class RouteView(APIView):
    def _route(self, request, service_id, route_id):
        endpoint = _endpoint(request, service_id)
        return endpoint, parse_id(route_id, "route_id")

    @extend_schema(request=s.TrafficRatioSerializer, responses=OBJECT, operation_id="services_route_update")
    def put(self, request, service_id, route_id):
        endpoint, route_id = self._route(request, service_id, route_id)
        p = s.params(request, s.TrafficRatioSerializer)
        route = endpoints.set_traffic_ratio(request.user, endpoint, route_id, p["traffic_ratio"])
        return Response({"success": True, **route_info(route)})

    @extend_schema(responses=OBJECT, operation_id="services_route_delete")
    def delete(self, request, service_id, route_id):
        endpoint, route_id = self._route(request, service_id, route_id)
        endpoints.remove_route(request.user, endpoint, route_id)
        return Response({"success": True})


class TokenView(APIView):
    """``POST /services/{id}/token`` ``{"duration": "1d"}`` or ``{"valid_until": <unix time>}``: the
    token, shown once (only its digest is kept).  ``DELETE``: revoke them all (ours; Backend.AI
    has no revocation)."""

    @extend_schema(request=s.TokenSerializer, responses=OBJECT, operation_id="services_token")
    def post(self, request, service_id):
        endpoint = _endpoint(request, service_id)
        p = s.params(request, s.TokenSerializer)
        _, token = endpoints.issue_token(request.user, endpoint, s.token_seconds(p))
        return Response({"token": token})

    @extend_schema(request=None, responses=OBJECT, operation_id="services_token_revoke")
    def delete(self, request, service_id):
        """``DELETE /services/{id}/token``: revoke every API token of the service at once (a new
        token secret; the proxy refuses the old tokens within seconds)."""
        revoked = endpoints.revoke_tokens(request.user, _endpoint(request, service_id))
        return Response({"success": True, "revoked": revoked})


class ErrorsView(APIView):
    @extend_schema(responses=OBJECT, operation_id="services_errors")
    def get(self, request, service_id):
        return Response(endpoints.errors(_endpoint(request, service_id)))


class ErrorsClearView(APIView):
    @extend_schema(request=None, responses={204: None}, operation_id="services_errors_clear")
    def post(self, request, service_id):
        endpoints.clear_errors(request.user, _endpoint(request, service_id))
        return Response(status=status.HTTP_204_NO_CONTENT)
