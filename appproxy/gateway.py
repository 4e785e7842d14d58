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
one-time setup link: ``start_service``), and drop a session's routes when it ends
(``remove_session_circuits``).  Everything else the coordinator decides on its own (the
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


class InProcessCoordinator:
    """The coordinator inside the manager: the services, called directly."""

    def start_service(self, user, session, app_name, **options) -> dict:
        return services.start_service(user, session, app_name, **options)

    def remove_session_circuits(self, session_id, reason: str = "session-ended") -> int:
        return services.remove_session_circuits(session_id, reason=reason)


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
