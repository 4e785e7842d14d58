"""The coordinator's own REST API, served by ``python -m appproxy.coordinator`` beside the
worker API (``/appproxy-api/v1/workers/<name>…``).  Thin: validate, call ``appproxy.services``.

* workers (Bearer worker token): ``POST /workers/register``, ``POST /workers/<id>/heartbeat``;
* the manager (the coordinator secret): ``GET /workers``, ``GET /workers/<id>`` (also the worker's
  own token), ``POST /routes``, ``GET /routes``, ``GET|DELETE /routes/<id>``, ``DELETE /routes?session_id=``;
  model-serving endpoints: ``POST|DELETE /v2/endpoints/<id>``, ``GET /v2/endpoints/<id>/health``,
  ``.../traffic?window=``, ``.../series?minutes=&step=``;
* ``GET /health`` for anyone (load balancers, the e2e tests).

docs/appproxy.md, "The coordinator's REST API", has the shapes.
"""
from django.db import connection
from rest_framework.response import Response
from rest_framework.views import APIView

from appproxy import services
from appproxy.api.authentication import (
    CoordinatorSecretAuthentication,
    IsCoordinatorClient,
    IsCoordinatorClientOrWorker,
    IsWorker,
    SecretOrWorkerTokenAuthentication,
    WorkerTokenAuthentication,
)
from appproxy.api.serializers import (
    HeartbeatSerializer,
    RouteCreateSerializer,
    RouteFilterSerializer,
    WorkerRegisterByNameSerializer,
)
from backendai.api import errors


class ForWorkers(APIView):
    authentication_classes = [WorkerTokenAuthentication]
    permission_classes = [IsWorker]


class ForManager(APIView):
    authentication_classes = [CoordinatorSecretAuthentication]
    permission_classes = [IsCoordinatorClient]


class RegisterView(ForWorkers):
    def post(self, request):
        params = WorkerRegisterByNameSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        return Response(services.register_worker(request.auth, params.validated_data))


class HeartbeatView(ForWorkers):
    def post(self, request, worker_id):
        params = HeartbeatSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        return Response(services.heartbeat_worker(request.auth, worker_id, params.validated_data))


class WorkerListView(ForManager):
    def get(self, request):
        return Response({"workers": services.list_workers()})


class WorkerDetailView(APIView):
    authentication_classes = [SecretOrWorkerTokenAuthentication]
    permission_classes = [IsCoordinatorClientOrWorker]

    def get(self, request, worker_id):
        return Response(services.show_worker(worker_id, request.auth))


class RouteListView(ForManager):
    def get(self, request):
        params = RouteFilterSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        return Response({"routes": services.list_routes(data.get("session_id"), data.get("worker_id"))})

    def post(self, request):
        params = RouteCreateSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        answer, created = services.open_route(
            session_id=data["session_id"], app=data["app"], user_id=data.get("user_id"), port=data.get("port"),
            envs=data.get("envs"), arguments=data.get("arguments"), open_to_public=data.get("open_to_public"),
            allowed_client_ips=data.get("allowed_client_ips"), redirect=data.get("redirect") or "/")
        return Response(answer, status=201 if created else 200)

    def delete(self, request):
        params = RouteFilterSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        if data.get("session_id") is None:
            raise errors.InvalidAPIParameters("session_id: required (DELETE /routes/<id> removes one route)")
        return Response({"removed": services.delete_session_routes(data["session_id"], data["reason"])})


class RouteDetailView(ForManager):
    def get(self, request, route_id):
        return Response(services.route_json(services.get_route(route_id)))

    def delete(self, request, route_id):
        services.delete_route(route_id)
        return Response(status=204)


def _int_param(request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise errors.InvalidAPIParameters(f"{name}: expected an integer, got {raw[:40]!r}") from None


SYNC_KEYS = ("owner_id", "name", "scaling_group_id", "app", "container_port", "routes", "open_to_public",
             "health_check", "token_secret")


class EndpointView(ForManager):
    """``POST /v2/endpoints/<id>``: create or update the endpoint's inference circuit;
    ``DELETE``: remove it (``{"removed": n}``)."""

    def post(self, request, endpoint_id):
        body = request.data
        if not isinstance(body, dict):
            raise errors.InvalidAPIParameters("expected a JSON object")
        unknown = set(body) - set(SYNC_KEYS)
        if unknown:
            raise errors.InvalidAPIParameters(f"unknown keys: {', '.join(sorted(map(str, unknown)))[:200]}")
        for key in ("owner_id", "container_port", "routes"):
            if key not in body:
                raise errors.InvalidAPIParameters(f"{key}: required")
        spec = {key: body[key] for key in SYNC_KEYS if key in body}
        spec.setdefault("name", "")
        spec.setdefault("app", "inference")
        spec.setdefault("open_to_public", False)
        spec.setdefault("token_secret", "")
        return Response(services.sync_endpoint(endpoint_id, **spec))

    def delete(self, request, endpoint_id):
        reason = request.query_params.get("reason") or "endpoint-destroyed"
        return Response({"removed": services.remove_endpoint(endpoint_id, reason=reason)})


class EndpointHealthView(ForManager):
    def get(self, request, endpoint_id):
        return Response({"routes": services.endpoint_health(endpoint_id)})


class EndpointTrafficView(ForManager):
    def get(self, request, endpoint_id):
        return Response(services.endpoint_traffic(endpoint_id, _int_param(request, "window", 60)))


class EndpointSeriesView(ForManager):
    def get(self, request, endpoint_id):
        return Response({"series": services.endpoint_series(endpoint_id, _int_param(request, "minutes", 15),
                                                            _int_param(request, "step", 30))})


class HealthView(APIView):
    authentication_classes = []
    permission_classes = []

    def get(self, request):
        with connection.cursor() as cursor:  # no database: the middleware answers 503
            cursor.execute("SELECT 1")
        return Response({"status": "ok", "component": "appproxy-coordinator",
                         "stale_workers": services.stale_workers()})
