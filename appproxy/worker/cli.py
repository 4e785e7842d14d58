"""Command line entry point: ``python -m appproxy.worker [options]`` (see ``--help``)."""
from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Sequence

from backendai import logformat

from .config import ConfigError, load_config
from .server import FOLLOWER_ENV, Worker

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
    runner, loop_name = event_loop(config.loop)
    follower = os.environ.pop(FOLLOWER_ENV, "") == "1"
    log.info("starting (%s event loop, %s of %d)", loop_name,
             f"follower process {os.getpid()}" if follower else "primary process", config.processes)
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return runner(Worker(config, follower=follower, argv=argv).run())
    except KeyboardInterrupt:
        return 0


def event_loop(choice: str):
    """``(runner, name)``: uvloop unless asked for asyncio (or uvloop is missing)."""
    if choice == "uvloop":
        try:
            import uvloop
        except ImportError:
            return asyncio.run, "asyncio (uvloop not installed)"
        return uvloop.run, f"uvloop {uvloop.__version__}"
    return asyncio.run, "asyncio"
