"""Command line entry point: ``python -m appproxy.worker [options]`` (see ``--help``)."""
from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Sequence

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
    logging.basicConfig(level=getattr(logging, config.log_level), stream=sys.stderr, force=True,
                        format=f"%(asctime)s %(levelname)s [proxy {config.name}] %(name)s: %(message)s")
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
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
