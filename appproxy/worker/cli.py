"""Command line entry point: ``python -m appproxy.worker [options]`` (see ``--help``)."""
from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Sequence

from backendai import logformat

from .config import ConfigError, load_config

log = logging.getLogger("appproxy.worker")


def main(argv: Sequence[str] | None = None) -> int:
    try:
        config = load_config(argv)
    except ConfigError as exc:
        print(f"appproxy worker: error: {exc}", file=sys.stderr)
        return 2
    if not config.token:
        print("appproxy worker: error: a token is required: --token or BAI_PROXY_TOKEN", file=sys.stderr)
        return 2
    logformat.setup_daemon_logging(  # in json, the worker's name a field of every line (docs/observability.md)
        log_format=config.log_format, log_level=config.log_level, task="proxy-worker", label=f"proxy {config.name}",
        fields={"proxy_worker": config.name})
    from .server import Worker

    try:  # uvloop is optional: a faster event loop when installed
        import uvloop
    except ImportError:
        uvloop = None
    runner = uvloop.run if uvloop is not None and hasattr(uvloop, "run") else asyncio.run
    log.info("starting (%s event loop)", "uvloop" if uvloop is not None else "asyncio")
    try:
        return runner(Worker(config).run())
    except KeyboardInterrupt:
        return 0
