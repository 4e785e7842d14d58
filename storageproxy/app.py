"""What both listeners share: the proxy's state, running blocking work off the event loop,
error translation to problem+json, and request logging (never the query string: it holds tokens)."""
from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from dataclasses import dataclass, field

from aiohttp import web

from storageproxy import errors, metrics
from storageproxy.backends import BadLimit, FolderMissing, QuotaFull, Volume
from storageproxy.config import ProxyConfig
from storageproxy.paths import NoSuchPath, PathConflict, StorageError, UnsafePath
from storageproxy.prometheus import ProxyMetrics

log = logging.getLogger("storageproxy")
access_log = logging.getLogger("storageproxy.access")

CTX_KEY = web.AppKey("ctx", object)


@dataclass
class ProxyContext:
    config: ProxyConfig
    volumes: dict[str, Volume]
    started: float = field(default_factory=time.time)
    metrics: ProxyMetrics = field(default_factory=ProxyMetrics)
    metrics_address: str = ""  # where /metrics is served (host:port as bound), "" when it is not

    def volume(self, name) -> Volume:
        if not isinstance(name, str) or not name or len(name) > 64:
            raise errors.InvalidAPIParameters("volume must name a volume of this proxy")
        volume = self.volumes.get(name)
        if volume is None:
            raise errors.not_found("storage volume", f"No such storage volume: {name}")
        return volume


def ctx_of(request: web.Request) -> ProxyContext:
    return request.app[CTX_KEY]


async def blocking(func, *args, **kwargs):
    """Run disk work in the default thread pool so the event loop never waits on a disk."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, functools.partial(func, *args, **kwargs))


async def observe_volume(ctx: ProxyContext, volume: Volume) -> dict:
    """Measure ``volume`` now (``storageproxy.metrics.measure_volume``, in a thread) and record it
    for ``/metrics``: the count, the time it took and the figures; a failure is counted and raised."""
    started = time.monotonic()
    try:
        figures = await blocking(metrics.measure_volume, volume.root)
    except Exception:
        ctx.metrics.measured(volume.name, time.monotonic() - started, None)
        raise
    ctx.metrics.measured(volume.name, time.monotonic() - started, figures)
    return figures


def translate(exc: BaseException, *, upload: bool = False) -> errors.ProxyError | None:
    """A storage error as the API reports it (the manager's mapping of the same faults)."""
    if isinstance(exc, errors.ProxyError):
        return exc
    if isinstance(exc, UnsafePath):
        return errors.InvalidAPIParameters(str(exc))
    if isinstance(exc, FolderMissing):
        return errors.VFolderOperationFailed(str(exc))
    if isinstance(exc, NoSuchPath):
        return errors.not_found("file or directory", str(exc))
    if isinstance(exc, PathConflict):
        return errors.VFolderOperationFailed(str(exc))
    if isinstance(exc, QuotaFull):
        kind = errors.UploadQuotaExceeded if upload else errors.QuotaExceeded
        return kind(str(exc), exc.data or None)
    if isinstance(exc, BadLimit):
        return errors.InvalidAPIParameters(str(exc))
    if isinstance(exc, StorageError):
        return errors.VFolderOperationFailed(str(exc))
    if isinstance(exc, OSError):
        return errors.VFolderOperationFailed(f"The storage operation failed: {exc.strerror or exc}")
    return None


def problem_middleware(upload: bool = False, api: str = "manager"):
    """Errors as problem+json, one access-log line and the request metrics of ``api`` per request."""
    @web.middleware
    async def middleware(request: web.Request, handler):
        started = time.monotonic()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            mapped = _http_problem(exc)
            status = mapped.status
            return mapped.response()
        except Exception as exc:
            mapped = translate(exc, upload=upload)
            if mapped is None:
                log.exception("%s %s failed", request.method, request.path)
                mapped = errors.InternalServerError("The storage proxy failed; see its log")
            elif isinstance(exc, OSError):
                log.warning("%s %s: %s", request.method, request.path, exc)
            status = mapped.status
            return mapped.response()
        finally:
            seconds = time.monotonic() - started
            access_log.info("%s %s %s %d %.1fms%s", request.remote, request.method, request.path, status,
                            seconds * 1000, _context(request))
            ctx_of(request).metrics.request_done(request, api, status, seconds)
    return middleware


def _context(request: web.Request) -> str:
    fields = request.get("log_context")
    if not fields:
        return ""
    return " " + " ".join(f"{k}={v}" for k, v in fields.items() if v is not None)


def _http_problem(exc: web.HTTPException) -> errors.ProxyError:
    if exc.status == 404:
        return errors.URLNotFound(f"No such endpoint: {exc.reason}")
    if exc.status == 405:
        return errors.MethodNotAllowed("The method is not allowed on this endpoint")
    if exc.status == 413:
        return errors.PayloadTooLarge("The request body is too large")
    if 400 <= exc.status < 500:
        error = errors.InvalidAPIParameters(exc.text or exc.reason)
        error.status = exc.status
        return error
    return errors.InternalServerError(exc.reason)


def json_response(data, status: int = 200) -> web.Response:
    return web.Response(status=status, text=json.dumps(data), content_type="application/json")
