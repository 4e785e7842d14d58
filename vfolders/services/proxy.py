"""The manager's side of the storage proxies (``python -m storageproxy``, the contract in
docs/vfolders.md): every file operation of a folder is a call to the manager API of the proxy
that serves its host (``<proxy>:<volume>``).

One pooled ``httpx.Client`` per proxy (its URL, secret and TLS choice), with bounded timeouts.
The proxy answers errors as problem+json with the same slugs the manager's API uses; ``call``
raises them again as the same ``backendai.api.errors`` class (same slug, status, title, msg and
data), so what an API client sees does not depend on where the fault was found.  A proxy that
does not answer, answers garbage, refuses the manager's secret or fails inside is
``ServiceUnavailable`` (503) — never a 500, and nothing changed on the manager's side.  A proxy
``vfolders.tasks.check_storage_proxies`` marked LOST is not called at all until it answers again.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from backendai import telemetry
from backendai.api import errors
from vfolders.models import ProxyStatus, StorageHost, StorageProxy

log = logging.getLogger(__name__)

AUTH_HEADER = "X-BackendAI-Storage-Auth-Token"
DEFAULT_PROXY_NAME = "local"
#: Seconds a long operation (a clone's copy, a folder's removal) may take on the proxy.
LONG_TIMEOUT = 6 * 3600.0

_clients: dict[tuple, httpx.Client] = {}
_clients_lock = threading.Lock()
_by_slug: dict[tuple[str, int], type[errors.BackendAIError]] = {}


def timeout() -> float:
    return float(getattr(settings, "STORAGE_PROXY_TIMEOUT", 10.0))


def lost_timeout() -> int:
    return int(getattr(settings, "STORAGE_PROXY_LOST_TIMEOUT", 30))


def _client(proxy: StorageProxy) -> httpx.Client:
    key = (proxy.name, proxy.manager_url.rstrip("/"), proxy.secret, bool(proxy.ssl_verify))
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            for stale in [k for k in _clients if k[0] == proxy.name]:  # its URL or secret changed
                _clients.pop(stale).close()
            client = httpx.Client(base_url=key[1], headers={AUTH_HEADER: proxy.secret}, verify=key[3],
                                  timeout=httpx.Timeout(timeout(), connect=min(5.0, timeout())),
                                  limits=httpx.Limits(max_connections=32, max_keepalive_connections=8),
                                  trust_env=False)
            _clients[key] = client
        return client


def close_clients() -> None:
    with _clients_lock:
        for client in _clients.values():
            client.close()
        _clients.clear()


def _error_classes() -> dict[tuple[str, int], type[errors.BackendAIError]]:
    if not _by_slug:
        for value in vars(errors).values():
            if isinstance(value, type) and issubclass(value, errors.BackendAIError) \
                    and value is not errors.BackendAIError:
                _by_slug.setdefault((value.error_type, value.status_code), value)
                _by_slug.setdefault((value.error_type, 0), value)
    return _by_slug


class ProxyUnreachable(errors.ServiceUnavailable):
    """A proxy that did not answer at all (refused, timed out): the same 503 for API clients; callers
    that ask one proxy many things (the folder list's sizes) stop asking it."""


def unavailable(proxy_name: str, why: str,
                cls: type[errors.ServiceUnavailable] = errors.ServiceUnavailable) -> errors.BackendAIError:
    return cls(f"The storage proxy {proxy_name!r} is unavailable: {why}", data={"storage_proxy": proxy_name})


def problem_error(proxy_name: str, response: httpx.Response) -> errors.BackendAIError:
    """The proxy's problem+json answer as the same API error (503 for what only the manager
    could have caused or cannot explain: its secret refused, a fault inside the proxy)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("type"), str):
        return unavailable(proxy_name, f"it answered {response.status_code} without a problem report")
    slug = body["type"].rsplit("/", 1)[-1]
    status = response.status_code
    if status == 401 or slug == "auth-failed":
        log.error("storage proxy %s refuses the manager's secret", proxy_name)
        return unavailable(proxy_name, "it refuses the manager's secret (check STORAGE_PROXY_SECRET)")
    if slug in ("url-not-found", "method-not-allowed"):  # a proxy that does not speak this manager's API
        log.error("storage proxy %s does not serve %s: %s", proxy_name, response.request.url.path, status)
        return unavailable(proxy_name, f"it does not serve {response.request.url.path} (is it too old?)")
    if status >= 500:
        log.error("storage proxy %s failed: %s %s", proxy_name, status, body.get("msg") or body.get("title"))
        return unavailable(proxy_name, str(body.get("msg") or body.get("title") or status))
    classes = _error_classes()
    cls = classes.get((slug, status)) or classes.get((slug, 0))
    if cls is None:
        cls = errors.GenericBadRequest if status < 500 else errors.ServiceUnavailable
    msg = body.get("msg") if isinstance(body.get("msg"), str) else None
    error = cls(msg, data=body.get("data"))
    if error.status_code != status:
        error.status_code = status
    title = body.get("title")
    if isinstance(title, str) and title and title != cls.error_title:
        error.error_title = title
    return error


def get_proxy(name: str) -> StorageProxy:
    proxy = StorageProxy.objects.filter(name=name).first()
    if proxy is None:
        raise unavailable(name, "no such storage proxy is configured")
    return proxy


def _operation(method: str, path: str) -> str:
    """A bounded label: the method and the path's first three words (``POST folder/file/upload``; the
    manager API's paths are constants, never ids)."""
    words = [w for w in path.split("?", 1)[0].strip("/").split("/")[:3] if w.replace("-", "_").isidentifier()]
    return f"{method.upper()} {'/'.join(words)}"[:64]


def call(proxy: StorageProxy, method: str, path: str, body: dict | None = None, *,
         long: bool = False, wait: float | None = None) -> dict:
    """One manager API request; the JSON answer, or the proxy's error raised as ours.  ``wait``:
    the seconds it may take instead of ``STORAGE_PROXY_TIMEOUT`` (``long``: hours)."""
    if proxy.status == ProxyStatus.LOST:
        raise unavailable(proxy.name, f"it has not answered since {proxy.last_seen or 'it was added'}"
                          + (f" ({proxy.last_error})" if proxy.last_error else ""))
    limit = httpx.USE_CLIENT_DEFAULT
    if long or wait is not None:
        seconds = LONG_TIMEOUT if long else wait
        limit = httpx.Timeout(seconds, connect=min(5.0, timeout(), seconds))
    try:
        with telemetry.layer_operation("storage_proxy", _operation(method, path)):
            response = _client(proxy).request(method, path, json=body, timeout=limit)
    except httpx.HTTPError as exc:
        log.warning("storage proxy %s: %s %s failed: %s", proxy.name, method, path, exc)
        raise unavailable(proxy.name, type(exc).__name__, ProxyUnreachable) from None
    if response.status_code >= 400:
        raise problem_error(proxy.name, response)
    if not response.content:
        return {}
    try:
        answer = response.json()
    except ValueError:
        raise unavailable(proxy.name, "it answered something that is not JSON") from None
    return answer if isinstance(answer, dict) else {"value": answer}


def client_base(host: StorageHost) -> str | None:
    """The client API base URL of the host's proxy as clients reach it (its ``client_url``)."""
    url = StorageProxy.objects.filter(name=host.proxy_name).values_list("client_url", flat=True).first()
    return url.rstrip("/") if url else None


def client_origin(host: StorageHost) -> str | None:
    """The origin (scheme://host:port) of the client API of the host's proxy, for the web UI's
    Content-Security-Policy (``connect-src``)."""
    url = client_base(host)
    if not url:
        return None
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme in ("http", "https") and parts.netloc else None


def host_call(host: StorageHost, method: str, path: str, body: dict | None = None, *, long: bool = False) -> dict:
    """A manager API request about a volume: ``volume`` is added to the body."""
    return call(get_proxy(host.proxy_name), method, path, {"volume": host.volume_name, **(body or {})}, long=long)


def folder_call(folder, method: str, path: str, body: dict | None = None, *, long: bool = False) -> dict:
    """A manager API request about a folder: ``volume`` and ``vfid`` are added to the body."""
    return host_call(folder.host, method, path, {"vfid": folder.vfid, **(body or {})}, long=long)


# --- health ---------------------------------------------------------------------------------------

def _volume_entries(answer: dict) -> list[dict]:
    volumes = answer.get("volumes")
    return [v for v in volumes if isinstance(v, dict) and isinstance(v.get("name"), str)] \
        if isinstance(volumes, list) else []


def metrics_address(proxy: StorageProxy, reported) -> str:
    """Where the proxy said it serves ``/metrics`` (``host:port``), "" when it said nothing usable;
    a wildcard host (``0.0.0.0``, ``::``) becomes the host of its manager URL."""
    if not isinstance(reported, str) or len(reported) > 300:
        return ""
    host, sep, port = reported.strip().rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) <= 65535 or \
            not all(c.isalnum() or c in ".-_:[]" for c in host):
        return ""
    if host in ("", "0.0.0.0", "[::]", "::"):
        host = urlsplit(proxy.manager_url).hostname or ""
        if not host:
            return ""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{int(port)}"


def check_proxy(proxy: StorageProxy) -> StorageProxy:
    """Ask the proxy for ``/status`` and ``/volumes`` and record what it said: ALIVE with its
    version and volumes (and each host's volume path), or, when it has not answered for
    ``STORAGE_PROXY_LOST_TIMEOUT`` seconds, LOST with the last error."""
    now = timezone.now()
    reachable = StorageProxy(**{f.attname: getattr(proxy, f.attname) for f in StorageProxy._meta.concrete_fields})
    reachable.status = ProxyStatus.ALIVE  # call() refuses a LOST proxy; this is the check that revives it
    try:
        status = call(reachable, "GET", "/status")
        volumes = _volume_entries(call(reachable, "GET", "/volumes"))
    except errors.BackendAIError as exc:
        error = exc.msg or exc.error_title
        since = proxy.last_seen or proxy.created_at  # a new proxy gets the same time to come up
        lost = proxy.status == ProxyStatus.LOST or since is None or (now - since).total_seconds() >= lost_timeout()
        changes = {"last_checked": now, "last_error": error[:2000]}
        if lost:
            changes["status"] = ProxyStatus.LOST
            if proxy.status != ProxyStatus.LOST:
                log.warning("storage proxy %s is LOST: %s", proxy.name, error)
        StorageProxy.objects.filter(pk=proxy.pk).update(**changes)
        for key, value in changes.items():
            setattr(proxy, key, value)
        return proxy
    if proxy.status != ProxyStatus.ALIVE:
        log.info("storage proxy %s is ALIVE (version %s)", proxy.name, status.get("version"))
    changes = {"status": ProxyStatus.ALIVE, "last_seen": now, "last_checked": now, "last_error": "",
               "version": str(status.get("version") or "")[:64], "volumes": volumes,
               "metrics_address": metrics_address(proxy, status.get("metrics_address"))}
    with transaction.atomic():
        StorageProxy.objects.filter(pk=proxy.pk).update(**changes)
        remember_volume_paths(proxy.name, volumes)
    for key, value in changes.items():
        setattr(proxy, key, value)
    return proxy


def check_all_proxies() -> dict:
    """What ``vfolders.tasks.check_storage_proxies`` runs: every proxy's health, by status."""
    counts: dict[str, int] = {"alive": 0, "lost": 0, "unknown": 0}
    for proxy in StorageProxy.objects.all():
        checked = check_proxy(proxy)
        counts[checked.status or "unknown"] += 1
    return counts


def remember_volume_paths(proxy_name: str, volumes: list[dict]) -> None:
    """Keep each reported volume's path on its storage host (mounts read it without a call)."""
    for volume in volumes:
        path = volume.get("path")
        if isinstance(path, str) and path:
            StorageHost.objects.filter(name=f"{proxy_name}:{volume['name']}").exclude(path=path).update(path=path)


def volume_report(host: StorageHost, live: bool = True) -> dict | None:
    """What the proxy says about the host's volume (``GET /volumes``), None when it does not
    know the volume; ``live=False`` reads what the last health check recorded."""
    if live:
        volumes = _volume_entries(call(get_proxy(host.proxy_name), "GET", "/volumes"))
        remember_volume_paths(host.proxy_name, volumes)
    else:
        proxy = StorageProxy.objects.filter(name=host.proxy_name).first()
        volumes = _volume_entries({"volumes": proxy.volumes if proxy else []})
    return next((v for v in volumes if v["name"] == host.volume_name), None)


def volume_root(host: StorageHost) -> Path:
    """The volume's directory on the proxy's host: the kept path, else asked for once."""
    if not host.path:
        report = volume_report(host)
        if report is None or not report.get("path"):
            raise errors.VFolderOperationFailed(
                f"The storage proxy {host.proxy_name!r} does not serve the volume {host.volume_name!r}")
        host.path = report["path"]
    return Path(host.path)
