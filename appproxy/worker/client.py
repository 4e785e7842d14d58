"""HTTP client for the coordinator's worker API (``/appproxy-api/v1/workers/<name>...``).

Registration goes to ``POST /workers/register`` (the coordinator's REST API, served by
``python -m appproxy.coordinator``), and to ``PUT /appproxy-api/v1/workers/<name>`` where that
path is unknown (404/405: a manager running the coordinator in-process); both are idempotent
and answer the same keys."""
from __future__ import annotations

import logging
from typing import Any

import httpx

from . import __version__

log = logging.getLogger(__name__)
API_PREFIX = "/appproxy-api/v1/workers"
REGISTER_PATH = "/workers/register"


class CoordinatorError(Exception):
    def __init__(self, message: str, status: int | None = None, slug: str = "", detail: str = ""):
        super().__init__(message)
        self.status = status
        self.slug = slug  # the problem type's last part, e.g. "setup-token-used"
        self.detail = detail  # the coordinator's message


class CoordinatorUnavailable(CoordinatorError):
    """Unreachable, timed out or 5xx: keep serving what we have and retry."""


class NotRegistered(CoordinatorError):
    """404 on heartbeat/table: the coordinator forgot us (row deleted): register again."""


class CoordinatorRejected(CoordinatorError):
    """401/403/other 4xx: a configuration problem (token, name) or a bug."""


class CoordinatorClient:
    def __init__(self, base_url: str, token: str, name: str, timeout: float = 10.0):
        self.name = name
        self._register_by_post: bool | None = None  # None: not tried yet
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"), timeout=timeout,
            headers={"Authorization": f"Bearer {token}", "User-Agent": f"appproxy-worker/{__version__}",
                     "Accept": "application/json"})

    async def close(self) -> None:
        await self._client.aclose()

    async def _call(self, method: str, path: str, **kwargs) -> Any:
        return await self._request(method, f"{API_PREFIX}/{self.name}{path}", **kwargs)

    async def _request(self, method: str, url: str, **kwargs) -> Any:
        try:
            response = await self._client.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            raise CoordinatorUnavailable(f"{method} {url}: {exc.__class__.__name__}: {exc}") from None
        if response.status_code >= 500:
            raise CoordinatorUnavailable(f"{method} {url}: HTTP {response.status_code}", response.status_code)
        if response.status_code >= 400:
            slug = ""
            try:
                body = response.json()
                text = body.get("msg") or body.get("title") or response.text[:200]
                slug = str(body.get("type") or "").rsplit("/", 1)[-1]
            except (ValueError, AttributeError):
                text = response.text[:200]
            kind = NotRegistered if response.status_code == 404 else CoordinatorRejected
            raise kind(f"{method} {url}: HTTP {response.status_code}: {text}", response.status_code, slug, str(text))
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise CoordinatorRejected(f"{method} {url}: the answer is not JSON") from None

    async def register(self, payload: dict) -> dict:
        body = {**payload, "version": __version__}
        if self._register_by_post is not False:
            try:
                answer = await self._request("POST", REGISTER_PATH, json={**body, "name": self.name})
            except CoordinatorError as exc:
                if exc.status not in (404, 405):
                    raise
                log.info("worker %s: %s is not served here: registering with PUT %s/%s", self.name, REGISTER_PATH,
                         API_PREFIX, self.name)
                self._register_by_post = False
            else:
                if not self._register_by_post:
                    log.info("worker %s: registered through POST %s", self.name, REGISTER_PATH)
                self._register_by_post = True
                return answer
        return await self._call("PUT", "", json=body)

    async def heartbeat(self, circuits: dict[str, float], failed_ports: list[int],
                        inference: dict | None = None) -> dict:
        """Liveness, last-access times and, for inference circuits, ``{circuit_id: {"health": {route_id:
        {...}}, "counters": {...}}}``."""
        body = {"circuits": circuits, "failed_ports": failed_ports}
        if inference:
            body["inference"] = inference
        return await self._call("POST", "/heartbeat", json=body)

    async def route_health(self, reports: dict) -> dict:
        """Routes whose health flipped: ``{circuit_id: {route_id: {status, changed_at, checked_at, ...}}}``."""
        return await self._call("POST", "/route-health", json={"circuits": reports})

    async def circuits(self, since: int | None = None) -> dict:
        return await self._call("GET", "/circuits", params={} if since is None else {"since": since})

    async def redeem_setup(self, token: str) -> dict:
        """Mark a setup link used at the coordinator: its claims the first time;
        :class:`CoordinatorRejected` (slug ``setup-token-used`` or ``setup-token-invalid``) after."""
        return await self._call("POST", "/setup-tokens/redeem", json={"token": token})

    async def shutdown(self) -> None:
        await self._call("POST", "/shutdown", json={})
