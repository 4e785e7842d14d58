"""The app proxy's REST endpoints.  Thin: validate, call ``appproxy.services``.

* ``/appproxy-api/v1/workers/<authority>...`` for workers (Bearer worker token);
* ``POST /session/<name>/start-service`` for users (HMAC-signed like every API call).
"""
from rest_framework.response import Response
from rest_framework.views import APIView

from appproxy import gateway, services
from appproxy.api.authentication import IsWorker, WorkerTokenAuthentication
from appproxy.api.serializers import (
    HeartbeatSerializer,
    RedeemSetupSerializer,
    RegisterSerializer,
    RouteHealthSerializer,
    StartServiceSerializer,
)
from backendai.api import errors
from sessions import services as session_services


class WorkerAPIView(APIView):
    authentication_classes = [WorkerTokenAuthentication]
    permission_classes = [IsWorker]


class WorkerRegisterView(WorkerAPIView):
    def put(self, request, authority):
        params = RegisterSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        return Response(services.register(request.auth, authority, params.validated_data))


class WorkerHeartbeatView(WorkerAPIView):
    def post(self, request, authority):
        params = HeartbeatSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        return Response(services.heartbeat(request.auth, authority, params.validated_data))


class WorkerCircuitsView(WorkerAPIView):
    def get(self, request, authority):
        since = request.query_params.get("since")
        if since is not None:
            try:
                since = int(since)
            except ValueError:
                raise errors.InvalidAPIParameters(f"since: expected a revision number, got {since!r}") from None
            if since < 0:
                raise errors.InvalidAPIParameters("since: must not be negative")
        return Response(services.circuit_table(request.auth, authority, since))


class WorkerRouteHealthView(WorkerAPIView):
    """``POST .../route-health {"circuits": {circuit_id: {route_id: {status, ...}}}}``: health checks that flipped."""

    def post(self, request, authority):
        params = RouteHealthSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        return Response({"recorded": services.report_route_health(request.auth, authority,
                                                                  params.validated_data["circuits"])})


class WorkerShutdownView(WorkerAPIView):
    def post(self, request, authority):
        services.shutdown(request.auth, authority)
        return Response(status=204)


class WorkerRedeemSetupView(WorkerAPIView):
    """``POST .../setup-tokens/redeem {"token"}``: the link's claims, once (410 ``setup-token-used`` after)."""

    def post(self, request, authority):
        params = RedeemSetupSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        return Response(services.redeem_setup_token(request.auth, authority, params.validated_data["token"]))


class StartServiceView(APIView):
    """``POST /session/<name>/start-service`` -> ``{"token", "wsproxy_addr", "url", ...}``."""

    def post(self, request, name):
        params = StartServiceSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        owner = request.query_params.get("owner_access_key") or (
            request.data.get("owner_access_key") if isinstance(request.data, dict) else None)
        session = session_services.get_session(request.user, request.auth, name, owner)
        result = gateway.coordinator().start_service(
            request.user, session, data["app"], port=data.get("port"), envs=data.get("envs"),
            arguments=data.get("arguments"), open_to_public=data.get("open_to_public"),
            allowed_client_ips=data.get("allowed_client_ips"), redirect=data.get("redirect") or "/")
        return Response(result)
