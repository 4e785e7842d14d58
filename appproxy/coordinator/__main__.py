"""``python -m appproxy.coordinator [--host 127.0.0.1] [--port 6030]``: the app proxy coordinator
on its own, served by daphne.  Every flag also reads ``APPPROXY_COORDINATOR_<FLAG>``; a bad value
stops start-up naming the flag or the variable (exit status 2).  Database, secrets and the rest
come from the same environment as the manager's (``backendai.config``)."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from backendai.daemon_options import ConfigError, Option, add_options, parse_host, parse_log_level, resolve

ENV_PREFIX = "APPPROXY_COORDINATOR_"
DEFAULT_PORT = 6030


def _port(text) -> int:
    try:
        value = int(str(text).strip())
    except ValueError:
        raise ValueError("expected a port number 1-65535") from None
    if not 1 <= value <= 65535:
        raise ValueError("expected a port number 1-65535")
    return value


OPTIONS = [
    Option("host", parse_host, "127.0.0.1", "address to listen on", "HOST"),
    Option("port", _port, DEFAULT_PORT, "port to listen on", "PORT"),
    Option("log_level", parse_log_level, "INFO", "DEBUG, INFO, WARNING or ERROR", "LEVEL"),
]


def load_options(argv: Sequence[str] | None = None, env=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m appproxy.coordinator",
                                     description="The app proxy coordinator as its own process.")
    add_options(parser, OPTIONS, ENV_PREFIX)
    args = parser.parse_args(argv)
    return resolve(OPTIONS, args, os.environ if env is None else env, ENV_PREFIX)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        options = load_options(argv)
    except ConfigError as exc:
        print(f"appproxy coordinator: error: {exc}", file=sys.stderr)
        return 2
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backendai.settings")
    os.environ.setdefault("LOG_LEVEL", options["log_level"])
    from daphne.endpoints import build_endpoint_description_strings
    from daphne.server import Server

    from appproxy.coordinator import asgi  # settings load here: a bad variable exits 2 naming it

    logging.getLogger("appproxy.coordinator").info(
        "app proxy coordinator listening on http://%s:%s", options["host"], options["port"])
    print(f"appproxy coordinator: listening on http://{options['host']}:{options['port']}", file=sys.stderr,
          flush=True)
    Server(application=asgi.application,
           endpoints=build_endpoint_description_strings(host=options["host"], port=options["port"]),
           http_timeout=None, websocket_timeout=0, application_close_timeout=10,
           server_name="appproxy-coordinator").run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
