"""Start-up: options, volumes, the two listeners (manager API and client API) in one process,
the staging sweeper, and a clean stop on SIGTERM/SIGINT."""
from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

from aiohttp import web

from storageproxy import __version__
from storageproxy.app import ProxyContext, blocking, observe_volume
from storageproxy.backends import BACKENDS, Volume
from storageproxy.client_api import build_client_app
from storageproxy.config import ConfigError, ProxyConfig, load_config
from storageproxy.manager_api import build_manager_app
from storageproxy.paths import StorageError
from storageproxy.prometheus import build_metrics_app

log = logging.getLogger("storageproxy")

SHUTDOWN_GRACE = 5.0  # seconds


def make_volumes(config: ProxyConfig) -> dict[str, Volume]:
    return {spec.name: BACKENDS[spec.backend](spec.name, spec.path, dir_mode=config.dir_mode,
                                              file_mode=config.file_mode)
            for spec in config.volumes}


async def _sweeper(ctx: ProxyContext) -> None:
    older_than = 2 * ctx.config.token_lifetime
    while True:
        for volume in ctx.volumes.values():
            try:
                removed = await blocking(volume.sweep, older_than)
            except OSError as exc:
                log.warning("volume %s: sweeping staged uploads failed: %s", volume.name, exc)
                continue
            if removed:
                log.info("volume %s: swept %d stale staged upload file(s)", volume.name, removed)
        await asyncio.sleep(ctx.config.sweep_interval)


async def _observer(ctx: ProxyContext) -> None:
    """Measure every volume each ``--metrics-interval`` seconds for ``/metrics``."""
    while True:
        for volume in ctx.volumes.values():
            try:
                await observe_volume(ctx, volume)
            except Exception as exc:  # noqa: BLE001 - counted as a failure; the observer goes on
                log.warning("volume %s: measuring it failed: %s", volume.name, exc)
        await asyncio.sleep(ctx.config.metrics_interval)


def _bound(runner: web.AppRunner) -> str:
    """``host:port`` the runner's first socket is bound to (the real port when 0 was asked for)."""
    host, port = runner.addresses[0][:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def serve(config: ProxyConfig, stop: asyncio.Event | None = None) -> None:
    volumes = make_volumes(config)
    for volume in volumes.values():
        await blocking(volume.startup)
        log.info("volume %s: %s backend at %s", volume.name, volume.backend, volume.root)
    ctx = ProxyContext(config, volumes)
    runners = []
    # first, so that /status names it from the first answer; no authentication: keep it on a private address
    if config.metrics_listen is not None:
        runner = web.AppRunner(build_metrics_app(ctx.metrics), access_log=None, handle_signals=False,
                               shutdown_timeout=1.0)
        await runner.setup()
        runners.append(runner)
        await web.TCPSite(runner, *config.metrics_listen, reuse_address=True).start()
        ctx.metrics_address = _bound(runner)
        log.info("metrics listening on %s (/metrics)", ctx.metrics_address)
    for app, host, port, what in (
            (build_manager_app(ctx), config.manager_host, config.manager_port, "manager API"),
            (build_client_app(ctx), config.client_host, config.client_port, "client API")):
        # a stop waits at most SHUTDOWN_GRACE for requests in flight (a tus PATCH resumes later)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_GRACE)
        await runner.setup()
        site = web.TCPSite(runner, host, port, reuse_address=True)
        await site.start()
        runners.append(runner)
        log.info("%s listening on %s:%d", what, host, port)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    sweeper = asyncio.create_task(_sweeper(ctx))
    observer = asyncio.create_task(_observer(ctx))
    log.info("storage proxy %s ready (client URL %s)", __version__, config.client_url)
    try:
        await stop.wait()
    finally:
        log.info("storage proxy stopping")
        sweeper.cancel()
        observer.cancel()
        for runner in runners:
            await runner.cleanup()
        for volume in volumes.values():
            await blocking(volume.shutdown)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        config = load_config(argv)
    except ConfigError as exc:
        print(f"storageproxy: configuration error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=config.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s")
    log.info("configuration: %s", config.public())
    try:
        asyncio.run(serve(config))
    except (StorageError, OSError) as exc:
        log.error("storage proxy cannot start: %s", exc)
        return 1
    return 0
