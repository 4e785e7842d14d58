"""HTTP client for the manager's agent API (``/agent-api/v1/*``).

Errors are sorted by what the agent should do about them:

* :class:`ManagerUnavailable`: connection refused, timeout, 5xx: back off and retry;
* :class:`AuthRejected`: 401/403: log loudly and retry slowly;
* :class:`ManagerRejected`: any other 4xx or a malformed answer: a bug on one side; retry with back-off.
"""
from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import httpx

from . import __version__

__all__ = ["API_PREFIX", "AuthRejected", "ManagerClient", "ManagerError", "ManagerRejected", "ManagerUnavailable"]

log = logging.getLogger(__name__)

API_PREFIX = "/agent-api/v1"


class ManagerError(Exception):
    """A request to the manager did not succeed."""

    def __init__(self, message: str, status: int | None = None, problem: dict[str, Any] | None = None):
        super().__init__(message)
        self.status = status
        self.problem = problem or {}


class ManagerUnavailable(ManagerError):
    """The manager could not be reached or failed (5xx)."""


class AuthRejected(ManagerError):
    """The manager refused the token (401) or what it allows (403)."""


class ManagerRejected(ManagerError):
    """The manager refused the request for another reason, or answered nonsense."""


def _describe(response: httpx.Response) -> tuple[str, dict[str, Any]]:
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    slug = str(body.get("type", "")).rsplit("/", 1)[-1]
    text = body.get("msg") or body.get("title") or body.get("detail") or response.text[:200]
    return f"HTTP {response.status_code}{f' {slug}' if slug else ''}: {text}", body


class ManagerClient:
    """Thread-safe client bound to one manager and one agent token."""

    def __init__(self, base_url: str, token: str, timeout: float = 10.0, transport: httpx.BaseTransport | None = None):
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._http = httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {token}", "User-Agent": f"bai-agent/{__version__}",
                     "Accept": "application/json"},
            timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
            transport=transport,
            trust_env=False,  # never go through a proxy from the environment
            follow_redirects=False,
        )

    @property
    def auth_header(self) -> str:
        return f"Bearer {self._token}"

    def link_url(self, agent_id: str) -> str:
        """The websocket URL of the link (``ws(s)://…/agent-api/v1/link?agent_id=…``)."""
        parts = urlsplit(self.base_url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + f"{API_PREFIX}/link",
                           f"agent_id={quote(agent_id)}", ""))

    def _post(self, path: str, body: dict[str, Any], timeout: float | httpx.Timeout | None = None) -> httpx.Response:
        try:
            kwargs: dict[str, Any] = {"timeout": timeout} if timeout is not None else {}
            response = self._http.post(API_PREFIX + path, content=json.dumps(body),
                                       headers={"Content-Type": "application/json"}, **kwargs)
        except httpx.HTTPError as exc:
            raise ManagerUnavailable(f"{type(exc).__name__}: {exc or 'no answer'}") from exc
        if response.status_code >= 500:
            message, problem = _describe(response)
            raise ManagerUnavailable(message, response.status_code, problem)
        if response.status_code in (401, 403):
            message, problem = _describe(response)
            raise AuthRejected(message, response.status_code, problem)
        if response.status_code >= 300:
            message, problem = _describe(response)
            raise ManagerRejected(message, response.status_code, problem)
        return response

    def _json(self, response: httpx.Response) -> dict[str, Any]:
        try:
            data = response.json()
        except ValueError:
            raise ManagerRejected(f"HTTP {response.status_code}: the answer is not JSON", response.status_code) from None
        if not isinstance(data, dict):
            raise ManagerRejected(f"HTTP {response.status_code}: the answer is not an object", response.status_code)
        return data

    def sync(self, body: dict[str, Any], wait: float = 0.0) -> dict[str, Any]:
        """POST /sync; returns the manager's answer (``desired``, ``stop``, ``sync_interval``…).

        ``wait``: the long poll's wait the body asks for; the request may take that much longer."""
        timeout = None
        if wait > 0:
            default = self._http.timeout
            timeout = httpx.Timeout(wait + (default.read or 10.0), connect=default.connect)
        return self._json(self._post("/sync", body, timeout=timeout))

    def post_events(self, agent_id: str, events: list[dict[str, Any]]) -> int:
        """POST /events; returns how many the manager accepted."""
        response = self._post("/events", {"agent_id": agent_id, "events": events})
        try:
            return int(self._json(response).get("accepted", len(events)))
        except (TypeError, ValueError, ManagerRejected):
            return len(events)

    def shutdown(self, agent_id: str, timeout: float = 3.0) -> None:
        """POST /shutdown (the manager marks the agent TERMINATED; kernels keep running)."""
        self._post("/shutdown", {"agent_id": agent_id}, timeout=timeout)

    def close(self) -> None:
        self._http.close()
