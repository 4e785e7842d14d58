"""The manager's door to the app proxy coordinator: one interface, two implementations,
chosen by ``settings.APPPROXY_COORDINATOR_URL``.

* empty (the default, the embedded stack): :class:`InProcessCoordinator` calls
  ``appproxy.services`` in this process;
* a URL (``python -m appproxy.coordinator`` elsewhere): :class:`HTTPCoordinator` calls the
  coordinator's REST API with the shared secret (``APPPROXY_COORDINATOR_SECRET``), bounded by
  ``APPPROXY_COORDINATOR_TIMEOUT``.  The coordinator's problems (404 no such app, 409 not
  running, 503 no worker, …) reach the manager's caller unchanged; a coordinator that cannot
  be reached is 503 ``service-unavailable``, never a 500.

What the manager asks of the coordinator: open a session's app for a user (a route and a
one-time setup link: ``start_service``), drop a session's routes when it ends
(``remove_session_circuits``), and keep a model-serving endpoint's inference circuit in step
(``sync_endpoint``, ``remove_endpoint``) and read what its worker saw (``endpoint_health``,
``endpoint_traffic``, ``endpoint_series``).  Everything else the coordinator decides on its own (the
periodic sweeps and the worker-lost checks run as Celery tasks on the shared database).
"""
from __future__ import annotations

import logging
from typing import Protocol

import httpx
from django.conf import settings

from appproxy import services
from backendai.api import errors

log = logging.getLogger(__name__)


class CoordinatorUnavailable(errors.BackendAIError):
    status_code = 503
    error_type = "service-unavailable"
    error_title = "The app proxy coordinator is not reachable."


class Coordinator(Protocol):
    def start_service(self, user, session, app_name: str, *, port: int | None = None, envs: dict | None = None,
                      arguments: dict | None = None, open_to_public: bool | None = None, allowed_client_ips=None,
                      redirect: str = "/") -> dict: ...

    def remove_session_circuits(self, session_id, reason: str = "session-ended") -> int: ...

    def sync_endpoint(self, endpoint_id, *, owner_id, name: str, scaling_group_id, app: str = "inference",
                      container_port: int, routes: list, open_to_public: bool, health_check: dict,
                      token_secret: str) -> dict: ...

    def remove_endpoint(self, endpoint_id, reason: str = "endpoint-destroyed") -> int: ...

    def endpoint_health(self, endpoint_id) -> dict: ...

    def endpoint_traffic(self, endpoint_id, window_seconds: int = 60) -> dict: ...

    def endpoint_series(self, endpoint_id, minutes: int = 15, step_seconds: int = 30) -> list: ...


class InProcessCoordinator:
    """The coordinator inside the manager: the services, called directly."""

    def start_service(self, user, session, app_name, **options) -> dict:
        return services.start_service(user, session, app_name, **options)

    def remove_session_circuits(self, session_id, reason: str = "session-ended") -> int:
        return services.remove_session_circuits(session_id, reason=reason)

    def sync_endpoint(self, endpoint_id, **spec) -> dict:
        return services.sync_endpoint(endpoint_id, **spec)

    def remove_endpoint(self, endpoint_id, reason: str = "endpoint-destroyed") -> int:
        return services.remove_endpoint(endpoint_id, reason=reason)

    def endpoint_health(self, endpoint_id) -> dict:
        return services.endpoint_health(endpoint_id)

    def endpoint_traffic(self, endpoint_id, window_seconds: int = 60) -> dict:
        return services.endpoint_traffic(endpoint_id, window_seconds)

    def endpoint_series(self, endpoint_id, minutes: int = 15, step_seconds: int = 30) -> list:
        return services.endpoint_series(endpoint_id, minutes, step_seconds)


class RemoteProblem(errors.BackendAIError):
    """A problem the coordinator answered, passed on as it came."""

    def __init__(self, status: int, slug: str, title: str, msg: str | None, data=None):
        self.status_code = status
        self.error_type = slug
        self.error_title = title
        super().__init__(msg, data)


class HTTPCoordinator:
    """The coordinator's REST API over HTTP (docs/appproxy.md, "The coordinator's REST API")."""

    def __init__(self, base_url: str, secret: str, timeout: float = 10.0, transport: httpx.BaseTransport | None = None):
        self.base_url = base_url.rstrip("/")
        self._client = httpx.Client(
            base_url=self.base_url, transport=transport,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
            headers={"X-BackendAI-Token": secret, "Accept": "application/json",
                     "User-Agent": "backendai-manager/appproxy-gateway"})

    def close(self) -> None:
        self._client.close()

    def _call(self, method: str, path: str, **kwargs):
        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            log.warning("app proxy coordinator at %s: %s %s failed: %s: %s", self.base_url, method, path,
                        exc.__class__.__name__, exc)
            raise CoordinatorUnavailable(f"The app proxy coordinator at {self.base_url} did not answer "
                                         f"({exc.__class__.__name__}); try again shortly") from None
        if response.status_code == 204:
            return None
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code >= 400:
            if isinstance(body, dict) and isinstance(body.get("type"), str):
                slug = body["type"].rsplit("/", 1)[-1]
                if response.status_code >= 500 and slug == "internal-server-error":
                    raise CoordinatorUnavailable("The app proxy coordinator failed; try again shortly")
                raise RemoteProblem(response.status_code, slug, str(body.get("title") or ""), body.get("msg"),
                                    body.get("data"))
            raise CoordinatorUnavailable(f"The app proxy coordinator answered HTTP {response.status_code}")
        if body is None:
            raise CoordinatorUnavailable("The app proxy coordinator answered something that is not JSON")
        return body

    def start_service(self, user, session, app_name, *, port=None, envs=None, arguments=None, open_to_public=None,
                      allowed_client_ips=None, redirect: str = "/") -> dict:
        body = {"session_id": str(session.pk), "app": app_name, "user_id": str(user.pk), "port": port,
                "envs": envs, "arguments": arguments, "open_to_public": open_to_public,
                "allowed_client_ips": allowed_client_ips, "redirect": redirect}
        return self._call("POST", "/routes", json=body)["setup"]

    def remove_session_circuits(self, session_id, reason: str = "session-ended") -> int:
        answer = self._call("DELETE", "/routes", params={"session_id": str(getattr(session_id, "pk", session_id)),
                                                        "reason": reason})
        return int(answer.get("removed") or 0)

    def sync_endpoint(self, endpoint_id, *, owner_id, name="", scaling_group_id=None, app="inference",
                      container_port, routes, open_to_public=False, health_check=None, token_secret="") -> dict:
        body = {"owner_id": str(owner_id), "name": name, "scaling_group_id": scaling_group_id, "app": app,
                "container_port": container_port, "routes": routes, "open_to_public": open_to_public,
                "health_check": health_check, "token_secret": token_secret}
        return self._call("POST", f"/v2/endpoints/{endpoint_id}", json=body)

    def remove_endpoint(self, endpoint_id, reason: str = "endpoint-destroyed") -> int:
        answer = self._call("DELETE", f"/v2/endpoints/{endpoint_id}", params={"reason": reason})
        return int(answer.get("removed") or 0)

    def endpoint_health(self, endpoint_id) -> dict:
        return self._call("GET", f"/v2/endpoints/{endpoint_id}/health")["routes"]

    def endpoint_traffic(self, endpoint_id, window_seconds: int = 60) -> dict:
        return self._call("GET", f"/v2/endpoints/{endpoint_id}/traffic", params={"window": window_seconds})

    def endpoint_series(self, endpoint_id, minutes: int = 15, step_seconds: int = 30) -> list:
        return self._call("GET", f"/v2/endpoints/{endpoint_id}/series",
                          params={"minutes": minutes, "step": step_seconds})["series"]


_remote: dict[tuple, HTTPCoordinator] = {}


def coordinator() -> Coordinator:
    """The implementation the settings choose (one HTTP client per URL and secret, reused)."""
    url = getattr(settings, "APPPROXY_COORDINATOR_URL", None)
    if not url:
        return InProcessCoordinator()
    key = (url, settings.APPPROXY_COORDINATOR_SECRET, float(settings.APPPROXY_COORDINATOR_TIMEOUT))
    client = _remote.get(key)
    if client is None:
        client = _remote[key] = HTTPCoordinator(*key)
    return client
